// The synthetic language: see synthetic.h for the recipe and invariants.
#include "data/synthetic.h"

#include <algorithm>
#include <cmath>

#include "data/core/errors.h"
#include "data/core/log.h"

namespace ablate::data {

uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t hash_combine(uint64_t a, uint64_t b) { return mix64(a ^ mix64(b + 0x632BE59BD9B4E019ull)); }

namespace {

// splitmix64 stream: one per sequence, seeded by (seed, stream, index).
struct Rng {
  uint64_t s;
  uint64_t next() { return mix64(s++); }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }
};

}  // namespace

SyntheticLanguage::SyntheticLanguage(const SyntheticOptions& o, int64_t seed) : opt_(o), seed_(seed) {
  if (o.vocab < 2) throw UserError(log::str("data.synthetic.vocab: must be >= 2, got ", o.vocab));
  if (o.zipf_exponent < 0) throw UserError("data.synthetic.zipf_exponent: must be >= 0");
  if (!(o.repeat_prob >= 0 && o.repeat_prob < 1))
    throw UserError(log::str("data.synthetic.repeat_prob: must be in [0, 1), got ", o.repeat_prob));
  if (o.repeat_min < 1 || o.repeat_max < o.repeat_min)
    throw UserError(log::str("data.synthetic.repeat_min/repeat_max: need 1 <= min <= max, got ", o.repeat_min, "..",
                             o.repeat_max));
  cdf_.resize(static_cast<size_t>(o.vocab));
  double total = 0;
  for (int64_t k = 0; k < o.vocab; ++k) {
    total += std::pow(static_cast<double>(k + 1), -o.zipf_exponent);
    cdf_[static_cast<size_t>(k)] = total;
  }
  for (auto& c : cdf_) c /= total;
  cdf_.back() = 1.0;
}

void SyntheticLanguage::sequence(int64_t stream, int64_t index, int64_t length, int32_t* out) const {
  if (length <= 0) return;
  Rng rng{hash_combine(hash_combine(static_cast<uint64_t>(seed_), static_cast<uint64_t>(stream)),
                       static_cast<uint64_t>(index))};
  const double q = opt_.repeat_prob / (1.0 - opt_.repeat_prob);
  const int32_t marker = marker_id();
  out[0] = bos_id();
  int64_t p = 1;
  while (p < length) {
    // Every position draws the same number of random values whatever happens, so a prefix of
    // a longer sequence equals the shorter sequence.
    const double u_repeat = rng.uniform();
    const int64_t d = opt_.repeat_min + rng.below(opt_.repeat_max - opt_.repeat_min + 1);
    const double u_token = rng.uniform();
    const int64_t src = p + 1 - d;
    // src < p: d = 1 would point at the marker itself, so it never starts a repeat. At the
    // last position the marker is emitted alone (its repeat falls outside the sequence).
    if (u_repeat < q && src >= 1 && src < p && out[src] < opt_.vocab) {
      out[p] = marker;
      if (p + 1 < length) out[p + 1] = out[src];
      p += 2;
      continue;
    }
    const auto it = std::lower_bound(cdf_.begin(), cdf_.end(), u_token);
    out[p] = static_cast<int32_t>(std::min<int64_t>(it - cdf_.begin(), opt_.vocab - 1));
    p += 1;
  }
}

std::vector<int32_t> SyntheticLanguage::sequence(int64_t stream, int64_t index, int64_t length) const {
  std::vector<int32_t> out(static_cast<size_t>(std::max<int64_t>(length, 0)));
  sequence(stream, index, length, out.data());
  return out;
}

}  // namespace ablate::data
