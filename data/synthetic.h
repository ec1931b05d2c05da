// The synthetic language of experiments/decoupling (issue 10 §1; docs/data.md).
// Ids: content 0..vocab-1, BOS = vocab, marker = vocab+1 (vocab_size() = vocab + 2).
// A sequence is BOS, then content tokens drawn i.i.d. from p(k) ∝ 1/(k+1)^s over the content
// ids, except that, at a position p chosen with probability q = repeat_prob/(1-repeat_prob),
// a marker is emitted at p and position p+1 repeats the token d positions back (d uniform in
// repeat_min..repeat_max; the source must be a content token, else no repeat starts there).
// So markers and repeats each make up ~repeat_prob of the positions.
// Invariant: sequence(stream, index, length) is a pure function of (seed, stream, index,
// length); a prefix of a longer sequence equals the shorter one. Nothing is stored.
#pragma once

#include <cstdint>
#include <vector>

#include "data/options.h"

namespace ablate::data {

// Streams keep training, validation and probe sequences disjoint.
constexpr int64_t kTrainStream = 0;
constexpr int64_t kValStream = 1;
constexpr int64_t kProbeStream = 2;

class SyntheticLanguage {
 public:
  SyntheticLanguage(const SyntheticOptions& options, int64_t seed);  // UserError on bad options

  int64_t vocab_size() const { return opt_.vocab + 2; }
  int32_t bos_id() const { return static_cast<int32_t>(opt_.vocab); }
  int32_t marker_id() const { return static_cast<int32_t>(opt_.vocab + 1); }
  const SyntheticOptions& options() const { return opt_; }

  // Writes `length` tokens: out[0] = BOS.
  void sequence(int64_t stream, int64_t index, int64_t length, int32_t* out) const;
  std::vector<int32_t> sequence(int64_t stream, int64_t index, int64_t length) const;

 private:
  SyntheticOptions opt_;
  int64_t seed_;
  std::vector<double> cdf_;  // Zipf CDF over content ids
};

// Counter-based hashing shared by the data floor (splitmix64 finaliser).
uint64_t mix64(uint64_t x);
uint64_t hash_combine(uint64_t a, uint64_t b);

}  // namespace ablate::data
