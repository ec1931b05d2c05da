// The training loader (docs/data.md, "Sample order").
// Invariants:
// * The sample order is a pure function of (data.seed, epoch, position) and the data: the loader
//   takes only DataOptions, so every model variant of an ablation sees the same tokens in the
//   same order.
// * Global sample g = position + j for j in [0, micro_batch * world); rank r reads
//   g = position + r * micro_batch + [0, micro_batch); every next() advances the position by
//   micro_batch * world on every rank. So N ranks × micro-batch b see exactly the tokens that
//   1 rank × N·b sees, in the same rows order (rank 0's rows first).
// * state() after k calls, restored into a fresh Loader, continues with call k+1's batch.
// * Tensors are CPU; inputs/targets (B, T) int64, loss_mask (B, T) float32.
#pragma once

#include <ATen/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/options.h"

namespace ablate::data {

struct Batch {
  at::Tensor inputs;     // (B, T) int64: tokens 0..T-1 of each sample
  at::Tensor targets;    // (B, T) int64: tokens 1..T
  at::Tensor loss_mask;  // (B, T) float: 1 where target position t+1 lies in data.loss_window
};

// Where the loader is: the next global sample, plus a fingerprint of the data it indexes
// (checked on restore: a different seed, corpus or sequence layout is refused).
struct LoaderState {
  int64_t position = 0;     // global samples consumed (all ranks together)
  std::string fingerprint;  // seed, source, seq_len, bos, sample count
  nlohmann::json to_json() const;
  static LoaderState from_json(const nlohmann::json& j);  // UserError on a malformed object
  std::string to_string() const;                           // compact JSON
  static LoaderState from_string(const std::string& s);
};

class Loader {
 public:
  // UserError for bad options or data (missing/invalid shards, empty corpus, no BOS where
  // data.bos is true, no validation shards).
  Loader(const DataOptions& options, int64_t micro_batch, int rank = 0, int world = 1);
  ~Loader();
  Loader(Loader&&) noexcept;
  Loader& operator=(Loader&&) noexcept;

  // One micro-batch for this rank: (micro_batch, seq_len).
  Batch next();
  LoaderState state() const;
  void restore(const LoaderState& state);  // UserError when the fingerprint differs

  // Smallest model vocabulary that covers every id the data can produce (tokenizer vocab, or
  // synthetic vocab + 2, or the largest id in the shards + 1 if that is larger).
  int64_t vocab_needed() const;
  int32_t bos_id() const;
  // The tokenizer's delimiter ids (Tokenizer::delimiter_ids); empty for synthetic data.
  std::vector<int64_t> delimiter_ids() const;
  // Samples per epoch (synthetic: unbounded, reported as INT64_MAX).
  int64_t samples_per_epoch() const;
  // Hex digest of the tokens of global samples [0, n): equal digests = same data order.
  std::string order_hash(int64_t n) const;

  // The fixed validation set (same for every variant and rank): validation_size() sequences of
  // seq_len + 1 tokens, in a fixed order. Batch i holds sequences [i*B, min((i+1)*B, size)).
  int64_t validation_size() const;
  Batch validation_batch(int64_t i, int64_t batch_size) const;
  // (n, seq_len) int64 probe sequences from validation data, a pure function of (data, seed);
  // with data.bos they start with BOS.
  at::Tensor probe_sequences(int64_t n, int64_t seq_len, int64_t seed) const;

  const DataOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ablate::data
