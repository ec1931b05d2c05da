// Spike and sink metrics (docs/metrics.md defines every number; ../shared/docs/PAPER.md §3).
// Pure functions and accumulators on tensors: no model, no files. Every input is copied to the
// CPU and reduced in float64, so results do not depend on the device or dtype of the probe.
// Memory stays bounded: accumulators take one batch (or one layer of attention) at a time and
// keep only per-block / per-head sums.
//
// Letters: B sequences in a batch, S positions in the residual stream, C channels, H heads,
// Q query positions (= S), K key positions, E head_dim, F FFN hidden width, L layers,
// N probe sequences. Positions are residual-stream positions (a prepended sink token is 0).
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <map>
#include <vector>

namespace ablate::analysis {

// ---- Spike profile, massive activations, step-up / step-down -------------------------------

struct BlockSpike {
  double top1 = 0;    // largest |h| over tokens x channels, mean over sequences
  double top3 = 0;    // third-largest |h| (order statistic), mean over sequences
  double median = 0;  // median |h| (lower median), mean over sequences
  double ratio = 0;   // top1 / median per sequence, mean over sequences
  double massive = 0; // massive entries per sequence (Sun et al. criterion), mean
};

struct SpikeOptions {
  double massive_abs = 100.0;    // massive: |h| > massive_abs ...
  double massive_ratio = 1000.0; // ... and |h| >= massive_ratio * median |h| of that sequence+block
  // Without massive entries, the spike channels are those whose peak-block magnitude is at
  // least this fraction of the largest channel's.
  double channel_fraction = 0.5;
};

struct SpikeProfile {
  int64_t sequences = 0;
  std::vector<BlockSpike> blocks;  // b = 0 (embedding output) .. 2L (after the last block)
  double spike_magnitude = 0;      // max over blocks b >= 1 of blocks[b].top1
  int64_t peak_block = 0;          // the argmax
  int64_t massive_total = 0;       // massive entries over all sequences and blocks
  std::map<int64_t, int64_t> massive_channels;   // channel -> entries (all sequences, blocks)
  std::map<int64_t, int64_t> massive_positions;  // position -> entries
  std::vector<int64_t> spike_channels;           // massive channels, else the fallback rule
  std::vector<double> spike_channel_magnitude;   // M_b = max over spike channels c of m_b[c]
  int64_t step_up = 0;    // block b >= 1 with the largest M_b - M_{b-1}
  int64_t step_down = 0;  // block b >= 1 with the smallest (most negative) M_b - M_{b-1}
  double step_up_delta = 0;
  double step_down_delta = 0;
};

class SpikeAccumulator {
 public:
  explicit SpikeAccumulator(SpikeOptions options = {}) : options_(options) {}
  // residual: one (B, S, C) tensor per block b = 0..2L; every call has the same block count.
  void add(const std::vector<at::Tensor>& residual);
  SpikeProfile finish() const;

 private:
  SpikeOptions options_;
  int64_t sequences_ = 0;
  std::vector<BlockSpike> sums_;
  std::vector<at::Tensor> channel_sum_;  // per block (C,) float64: sum over sequences of max_s |h[s, c]|
  int64_t massive_total_ = 0;
  std::map<int64_t, int64_t> channels_, positions_;
};

// Per-token largest |h| over channels: (B, S, C) -> (B, S) float64.
at::Tensor token_top1(const at::Tensor& h);

// ---- Near-constant geometry --------------------------------------------------------------

// x / sqrt(mean(x^2) + eps) over the last dimension (RMS normalisation without a gain).
at::Tensor rms_normalize(const at::Tensor& x, double eps = 1e-5);
// rows (M, C), sequence (M,) int64: mean cosine over pairs i < j with sequence[i] != sequence[j].
// NaN when there is no such pair.
double cross_sequence_cosine(const at::Tensor& rows, const at::Tensor& sequence);
// Fraction of entries with |x| < threshold.
double small_fraction(const at::Tensor& x, double threshold = 0.01);
// Effective rank (Roy & Vetterli 2007) of rows (M, E): exp(-sum p_i log p_i), p_i = s_i / sum s,
// s the singular values (uncentred). 1 for a rank-1 matrix, r for r equal singular values;
// 0 for an empty or all-zero matrix.
double effective_rank(const at::Tensor& rows);
// Pearson correlation of two equal-length vectors; NaN when either is constant.
double pearson(const at::Tensor& x, const at::Tensor& y);

// ---- Sinks (mass form, Gu et al.'s alpha / Sink^eps, delimiters) and locality ------------

struct SinkOptions {
  double epsilon = 0.3;  // Sink_k^eps threshold
  int64_t max_k = 1;     // alpha_k for k = 1..max_k (Gu's 1-based token index: k = 1 is position 0)
};

struct SinkReport {
  int64_t layers = 0, heads = 0, sequences = 0;
  double epsilon = 0.3;
  // Mass form: mean over queries t >= 1 of A[t, 0]; per (layer, head), per layer, overall.
  at::Tensor mass;                   // (L, H) float64
  std::vector<double> mass_per_layer;
  double sink_mass = 0;
  // Gu et al.: alpha[k-1] is (L, H): mean over sequences and queries t >= k-1 of A[t, k-1].
  std::vector<at::Tensor> alpha;
  std::vector<double> sink_eps;                // Sink_k^eps, k = 1..max_k: fraction of heads with alpha_k > eps
  std::vector<double> sink_eps_per_layer;      // Sink_1^eps per layer (fraction of its heads)
  // Row-normalised (share) form of alpha_1: mean over queries t >= 0 of A[t, 0] / sum_s A[t, s]
  // over stream keys 0..t, so that unnormalised rows (sigmoid) compare with softmax ones; equal
  // to alpha_1 where stream rows sum to 1 (softmax, sink_token). (L, H) float64; Sink^eps on it.
  at::Tensor alpha1_share;
  double sink_eps_share = 0;
  std::vector<double> sink_eps_share_per_layer;
  // First delimiter (positions given per sequence): alpha over sequences that have one.
  int64_t delimiter_sequences = 0;
  at::Tensor delimiter_alpha;  // (L, H) float64, undefined when never measured
  double delimiter_sink_eps = 0;
  // Learned key bias (key_offset > 0): mean over all queries of A[t, 0 .. key_offset-1].
  at::Tensor bias_mass;  // (L, H) float64, undefined without a bias key
  // Locality: E[t - s] under A[t, s] renormalised over 1 <= s <= t, mean over queries t >= 1
  // (and sequences); its Pearson correlation with alpha_1 over (layer, head).
  at::Tensor distance;  // (L, H) float64
  double locality_alpha_corr = 0;
};

class SinkAccumulator {
 public:
  SinkAccumulator(SinkOptions options, int64_t layers);
  // attention (B, H, Q, K) probabilities of `layer`; key index key_offset + s is stream position
  // s (extra keys after key_offset + Q, e.g. softmax1's zero key, are ignored). delimiter:
  // (B,) int64 stream position of each sequence's first delimiter, -1 = none; undefined = skip.
  // Every layer must be added once per batch of sequences.
  void add_layer(int64_t layer, const at::Tensor& attention, int64_t key_offset = 0,
                 const at::Tensor& delimiter = {});
  SinkReport finish() const;

 private:
  SinkOptions options_;
  int64_t layers_;
  int64_t heads_ = 0;
  std::vector<int64_t> sequences_;  // per layer
  std::vector<at::Tensor> mass_, distance_, distance_count_, delim_, bias_, share_;  // per layer (H,)
  std::vector<std::vector<at::Tensor>> alpha_;                            // [layer][k-1] (H,)
  std::vector<int64_t> delim_count_;
};

// ---- Quadratic amplifier (SwiGLU) and spike-token ubiquity --------------------------------

// SwiGLU y = W_down (silu(W_gate x) * (W_up x)); silu(z) ~ z/2 near 0 makes y_k a quadratic form
// x^T M_k x with M_k = W_gate^T diag(W_down[k, :]) W_up. Returns ||sym(M_k)||_F for every output
// channel k, sym(M) = (M + M^T)/2. Weights in nn::Linear layout: W_gate, W_up (F, C), W_down (C, F).
// Computed without forming M_k: ||sym M||_F^2 = (||M||_F^2 + tr(M M)) / 2 = d^T Kmat d with
// d = W_down[k, :], Kmat = ((W_g W_g^T) * (W_u W_u^T) + R * R^T) / 2, R = W_u W_g^T. (C,) float64.
at::Tensor quadratic_amplifier_norms(const at::Tensor& w_gate, const at::Tensor& w_up,
                                     const at::Tensor& w_down);

// Fraction of tokens that spike: token i spikes iff top1[i] > min_abs and
// top1[i] >= min_ratio * median[i]. top1, median: (M,). 0 for M = 0.
double spike_ubiquity(const at::Tensor& top1, const at::Tensor& median, double min_abs,
                      double min_ratio);

}  // namespace ablate::analysis
