#include "analysis/metrics.h"

#include "data/core/errors.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

namespace ablate::analysis {
namespace {

at::Tensor cpu64(const at::Tensor& t) { return t.detach().to(at::kCPU).to(at::kDouble); }

void require(bool ok, const char* what) {
  if (!ok) throw UserError(what);
}

}  // namespace

// ---- Spike profile -----------------------------------------------------------------------

at::Tensor token_top1(const at::Tensor& h) { return cpu64(h).abs().amax(-1); }

void SpikeAccumulator::add(const std::vector<at::Tensor>& residual) {
  require(!residual.empty(), "spike profile: empty residual stream");
  if (sums_.empty()) {
    sums_.resize(residual.size());
    channel_sum_.resize(residual.size());
  }
  require(sums_.size() == residual.size(), "spike profile: block count changed between batches");
  const int64_t batch = residual[0].size(0);
  for (size_t b = 0; b < residual.size(); ++b) {
    require(residual[b].dim() == 3, "spike profile: residual tensors must be (B, S, C)");
    const at::Tensor a = cpu64(residual[b]).abs();            // (B, S, C)
    const at::Tensor flat = a.reshape({batch, -1});           // (B, S*C)
    const int64_t k = std::min<int64_t>(3, flat.size(1));
    const at::Tensor top = std::get<0>(flat.topk(k, 1));      // (B, k) descending
    const at::Tensor top1 = top.select(1, 0);
    const at::Tensor top3 = top.select(1, k - 1);
    const at::Tensor median = std::get<0>(flat.median(1));    // (B,) lower median
    const at::Tensor ratio = top1 / median.clamp_min(std::numeric_limits<double>::min());
    const at::Tensor thr = (median * options_.massive_ratio).view({batch, 1, 1});
    const at::Tensor massive = (a > options_.massive_abs).logical_and(a >= thr);  // (B, S, C)
    const at::Tensor hits = massive.nonzero();                                     // (M, 3)
    BlockSpike& s = sums_[b];
    s.top1 += top1.sum().item<double>();
    s.top3 += top3.sum().item<double>();
    s.median += median.sum().item<double>();
    s.ratio += ratio.sum().item<double>();
    s.massive += static_cast<double>(hits.size(0));
    massive_total_ += hits.size(0);
    auto acc = hits.accessor<int64_t, 2>();
    for (int64_t i = 0; i < hits.size(0); ++i) {
      ++positions_[acc[i][1]];
      ++channels_[acc[i][2]];
    }
    const at::Tensor cmax = a.amax(1).sum(0);  // (C,)
    channel_sum_[b] = channel_sum_[b].defined() ? channel_sum_[b] + cmax : cmax;
  }
  sequences_ += batch;
}

SpikeProfile SpikeAccumulator::finish() const {
  SpikeProfile p;
  p.sequences = sequences_;
  if (sequences_ == 0) return p;
  const double n = static_cast<double>(sequences_);
  const int64_t nb = static_cast<int64_t>(sums_.size());
  for (const BlockSpike& s : sums_) {
    p.blocks.push_back({s.top1 / n, s.top3 / n, s.median / n, s.ratio / n, s.massive / n});
  }
  p.peak_block = nb > 1 ? 1 : 0;
  for (int64_t b = p.peak_block; b < nb; ++b) {
    if (p.blocks[b].top1 > p.blocks[p.peak_block].top1) p.peak_block = b;
  }
  p.spike_magnitude = p.blocks[p.peak_block].top1;
  p.massive_total = massive_total_;
  p.massive_channels = channels_;
  p.massive_positions = positions_;

  // Spike channels: every channel that was ever massive; otherwise the channels whose mean peak
  // magnitude m_peak[c] reaches channel_fraction of the largest one.
  for (const auto& [c, hits] : channels_) p.spike_channels.push_back(c);
  const at::Tensor m_peak = channel_sum_[p.peak_block] / n;
  if (p.spike_channels.empty()) {
    const double top = m_peak.max().item<double>();
    const at::Tensor idx = (m_peak >= options_.channel_fraction * top).nonzero().flatten();
    for (int64_t i = 0; i < idx.size(0); ++i) p.spike_channels.push_back(idx[i].item<int64_t>());
  }
  const at::Tensor sel = at::tensor(p.spike_channels, at::kLong);
  for (int64_t b = 0; b < nb; ++b) {
    p.spike_channel_magnitude.push_back((channel_sum_[b] / n).index_select(0, sel).max().item<double>());
  }
  if (nb > 1) {
    p.step_up = p.step_down = 1;
    p.step_up_delta = p.step_down_delta = p.spike_channel_magnitude[1] - p.spike_channel_magnitude[0];
    for (int64_t b = 2; b < nb; ++b) {
      const double d = p.spike_channel_magnitude[b] - p.spike_channel_magnitude[b - 1];
      if (d > p.step_up_delta) p.step_up = b, p.step_up_delta = d;
      if (d < p.step_down_delta) p.step_down = b, p.step_down_delta = d;
    }
  }
  return p;
}

// ---- Geometry ----------------------------------------------------------------------------

at::Tensor rms_normalize(const at::Tensor& x, double eps) {
  const at::Tensor v = cpu64(x);
  return v * (v.pow(2).mean(-1, /*keepdim=*/true) + eps).rsqrt();
}

double cross_sequence_cosine(const at::Tensor& rows, const at::Tensor& sequence) {
  require(rows.dim() == 2 && sequence.dim() == 1 && rows.size(0) == sequence.size(0),
          "cross_sequence_cosine: rows (M, C) and sequence (M,) expected");
  const at::Tensor r = cpu64(rows);
  const at::Tensor u = r / r.norm(2, 1, /*keepdim=*/true).clamp_min(1e-300);
  const at::Tensor cos = u.matmul(u.t());  // (M, M)
  const at::Tensor seq = sequence.to(at::kCPU).to(at::kLong);
  const at::Tensor pair = seq.view({-1, 1}).ne(seq.view({1, -1}));  // different sequences
  const int64_t count = pair.sum().item<int64_t>();
  if (count == 0) return std::numeric_limits<double>::quiet_NaN();
  return cos.masked_select(pair).sum().item<double>() / static_cast<double>(count);
}

double small_fraction(const at::Tensor& x, double threshold) {
  if (x.numel() == 0) return 0.0;
  return cpu64(x).abs().lt(threshold).to(at::kDouble).mean().item<double>();
}

double effective_rank(const at::Tensor& rows) {
  if (rows.numel() == 0) return 0.0;
  const at::Tensor s = at::linalg_svdvals(cpu64(rows));
  const double total = s.sum().item<double>();
  if (!(total > 0)) return 0.0;
  const at::Tensor p = s / total;
  const at::Tensor nz = p.masked_select(p > 0);
  return std::exp(-(nz * nz.log()).sum().item<double>());
}

double pearson(const at::Tensor& x, const at::Tensor& y) {
  const at::Tensor a = cpu64(x).flatten(), b = cpu64(y).flatten();
  require(a.numel() == b.numel(), "pearson: lengths differ");
  const at::Tensor da = a - a.mean(), db = b - b.mean();
  const double den = std::sqrt(da.pow(2).sum().item<double>() * db.pow(2).sum().item<double>());
  if (!(den > 0)) return std::numeric_limits<double>::quiet_NaN();
  return (da * db).sum().item<double>() / den;
}

// ---- Sinks -------------------------------------------------------------------------------

SinkAccumulator::SinkAccumulator(SinkOptions options, int64_t layers)
    : options_(options), layers_(layers) {
  require(layers > 0 && options.max_k >= 1, "sink accumulator: need layers > 0 and max_k >= 1");
  sequences_.assign(layers, 0);
  mass_.resize(layers);
  distance_.resize(layers);
  distance_count_.resize(layers);
  delim_.resize(layers);
  bias_.resize(layers);
  share_.resize(layers);
  alpha_.assign(layers, std::vector<at::Tensor>(options.max_k));
  delim_count_.assign(layers, 0);
}

namespace {
void add_to(at::Tensor& sum, const at::Tensor& x) { sum = sum.defined() ? sum + x : x; }
// (L, H) per-head values > eps: the fraction over all heads, and per layer (Sink^eps).
std::pair<double, std::vector<double>> fraction_above(const at::Tensor& x, double eps) {
  const at::Tensor above = (x > eps).to(at::kDouble);
  std::vector<double> per_layer;
  for (int64_t l = 0; l < x.size(0); ++l) per_layer.push_back(above[l].mean().item<double>());
  return {above.mean().item<double>(), per_layer};
}
}  // namespace

void SinkAccumulator::add_layer(int64_t layer, const at::Tensor& attention, int64_t key_offset,
                                const at::Tensor& delimiter) {
  require(layer >= 0 && layer < layers_, "sink accumulator: layer out of range");
  require(attention.dim() == 4, "sink accumulator: attention must be (B, H, Q, K)");
  const int64_t B = attention.size(0), H = attention.size(1), Q = attention.size(2);
  require(attention.size(3) >= key_offset + Q, "sink accumulator: fewer keys than queries");
  require(Q >= 2, "sink accumulator: need at least two positions");
  if (heads_ == 0) heads_ = H;
  require(heads_ == H, "sink accumulator: head count changed");
  const at::Tensor a_all = cpu64(attention);
  const at::Tensor a = a_all.narrow(3, key_offset, Q);  // (B, H, Q, Q): stream keys only

  // Mass form: queries t >= 1 on key 0; mean over queries, summed over the batch.
  add_to(mass_[layer], a.select(3, 0).narrow(2, 1, Q - 1).mean(2).sum(0));
  // Gu et al.: alpha_k, k 1-based, key position k-1, queries t >= k-1.
  for (int64_t k = 1; k <= options_.max_k && k <= Q; ++k) {
    add_to(alpha_[layer][k - 1], a.select(3, k - 1).narrow(2, k - 1, Q - k + 1).mean(2).sum(0));
  }
  if (key_offset > 0) {
    add_to(bias_[layer], a_all.narrow(3, 0, key_offset).sum(3).mean(2).sum(0));
  }
  const at::Tensor t = at::arange(Q, at::kDouble).view({Q, 1});
  const at::Tensor s = at::arange(Q, at::kDouble).view({1, Q});
  const at::Tensor causal = s <= t;  // (Q, Q) keys 0..t of query t

  // Share form of alpha_1: each query row renormalised over its causal stream keys 0..t (rows
  // whose stream mass is exactly 0 count as 0; float64, so tiny sigmoid rows keep their share).
  const at::Tensor row = (a * causal.to(at::kDouble)).sum(3);  // (B, H, Q)
  add_to(share_[layer],
         at::where(row.gt(0.0), a.select(3, 0) / row.clamp_min(1e-300), at::zeros_like(row)).mean(2).sum(0));

  // Locality: D[t, s] = t - s over keys 1 <= s <= t, renormalised without the sink position 0.
  const at::Tensor keep = (s >= 1).logical_and(causal).to(at::kDouble);  // (Q, Q)
  const at::Tensor w = a * keep;
  const at::Tensor den = w.sum(3);                       // (B, H, Q)
  const at::Tensor num = (w * (t - s)).sum(3);           // (B, H, Q)
  const at::Tensor valid = den.gt(1e-12).logical_and(t.view({1, 1, Q}) >= 1);
  const at::Tensor dist = at::where(valid, num / den.clamp_min(1e-300), at::zeros_like(num));
  add_to(distance_[layer], dist.sum(at::IntArrayRef{0, 2}));
  add_to(distance_count_[layer], valid.to(at::kDouble).sum(at::IntArrayRef{0, 2}));

  if (delimiter.defined()) {
    require(delimiter.dim() == 1 && delimiter.size(0) == B, "sink accumulator: delimiter must be (B,)");
    const at::Tensor d = delimiter.to(at::kCPU).to(at::kLong);
    auto da = d.accessor<int64_t, 1>();
    at::Tensor sum = at::zeros({H}, at::kDouble);
    int64_t count = 0;
    for (int64_t i = 0; i < B; ++i) {
      const int64_t p = da[i];
      if (p < 0 || p >= Q) continue;
      sum += a[i].select(2, p).narrow(1, p, Q - p).mean(1);  // (H,)
      ++count;
    }
    add_to(delim_[layer], sum);
    delim_count_[layer] += count;
  }
  sequences_[layer] += B;
}

SinkReport SinkAccumulator::finish() const {
  SinkReport r;
  r.layers = layers_;
  r.heads = heads_;
  r.epsilon = options_.epsilon;
  for (int64_t l = 0; l < layers_; ++l) {
    require(sequences_[l] > 0, "sink accumulator: a layer received no attention maps");
    require(sequences_[l] == sequences_[0], "sink accumulator: layers saw different sequence counts");
  }
  r.sequences = sequences_[0];
  const double n = static_cast<double>(r.sequences);
  std::vector<at::Tensor> mass, dist, bias, delim, share;
  for (int64_t l = 0; l < layers_; ++l) {
    mass.push_back(mass_[l] / n);
    share.push_back(share_[l] / n);
    dist.push_back(distance_[l] / distance_count_[l].clamp_min(1.0));
    if (bias_[l].defined()) bias.push_back(bias_[l] / n);
    if (delim_[l].defined()) delim.push_back(delim_[l] / std::max<double>(1.0, delim_count_[l]));
  }
  r.mass = at::stack(mass);
  r.alpha1_share = at::stack(share);
  std::tie(r.sink_eps_share, r.sink_eps_share_per_layer) = fraction_above(r.alpha1_share, options_.epsilon);
  r.distance = at::stack(dist);
  if (static_cast<int64_t>(bias.size()) == layers_) r.bias_mass = at::stack(bias);
  if (static_cast<int64_t>(delim.size()) == layers_) {
    r.delimiter_alpha = at::stack(delim);
    r.delimiter_sequences = delim_count_[0];
    r.delimiter_sink_eps = (r.delimiter_alpha > options_.epsilon).to(at::kDouble).mean().item<double>();
  }
  for (int64_t l = 0; l < layers_; ++l) r.mass_per_layer.push_back(r.mass[l].mean().item<double>());
  r.sink_mass = r.mass.mean().item<double>();
  for (int64_t k = 0; k < options_.max_k; ++k) {
    std::vector<at::Tensor> rows;
    for (int64_t l = 0; l < layers_; ++l) {
      if (alpha_[l][k].defined()) rows.push_back(alpha_[l][k] / n);
    }
    if (static_cast<int64_t>(rows.size()) != layers_) break;
    r.alpha.push_back(at::stack(rows));
    auto [overall, per_layer] = fraction_above(r.alpha.back(), options_.epsilon);
    r.sink_eps.push_back(overall);
    if (k == 0) r.sink_eps_per_layer = std::move(per_layer);
  }
  r.locality_alpha_corr = pearson(r.distance, r.alpha[0]);
  return r;
}

// ---- Quadratic amplifier, ubiquity -------------------------------------------------------

at::Tensor quadratic_amplifier_norms(const at::Tensor& w_gate, const at::Tensor& w_up,
                                     const at::Tensor& w_down) {
  require(w_gate.dim() == 2 && w_up.sizes() == w_gate.sizes() && w_down.dim() == 2 &&
              w_down.size(1) == w_gate.size(0) && w_down.size(0) == w_gate.size(1),
          "quadratic amplifier: expected W_gate, W_up (F, C) and W_down (C, F)");
  const at::Tensor g = cpu64(w_gate), u = cpu64(w_up), d = cpu64(w_down);
  const at::Tensor r = u.matmul(g.t());                                        // (F, F)
  const at::Tensor kmat = (g.matmul(g.t()) * u.matmul(u.t()) + r * r.t()) * 0.5;  // (F, F)
  return (d.matmul(kmat) * d).sum(1).clamp_min(0.0).sqrt();                   // (C,)
}

double spike_ubiquity(const at::Tensor& top1, const at::Tensor& median, double min_abs,
                      double min_ratio) {
  if (top1.numel() == 0) return 0.0;
  const at::Tensor t = cpu64(top1).flatten(), m = cpu64(median).flatten();
  require(t.numel() == m.numel(), "spike ubiquity: top1 and median lengths differ");
  const at::Tensor spikes = (t > min_abs).logical_and(t >= m * min_ratio);
  return spikes.to(at::kDouble).mean().item<double>();
}

}  // namespace ablate::analysis
