#include "analysis/probe.h"

#include "data/core/errors.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <iomanip>
#include <limits>
#include <set>
#include <sstream>

namespace ablate::analysis {
namespace {

using modules::ForwardResult;
using modules::ProbeRequest;

// Next-token cross entropy summed over positions: logits (B, T, V), tokens (B, T).
double loss_sum(const at::Tensor& logits, const at::Tensor& tokens) {
  const int64_t T = tokens.size(1);
  const at::Tensor lp = at::log_softmax(logits.narrow(1, 0, T - 1).to(at::kFloat), -1);
  const at::Tensor tgt = tokens.narrow(1, 1, T - 1).to(lp.device()).unsqueeze(-1);
  return -lp.gather(-1, tgt).sum().item<double>();
}

// Stream position of each sequence's first delimiter (token position >= 1), -1 = none. (B,)
at::Tensor first_delimiter(const at::Tensor& tokens, const std::vector<int64_t>& ids, int64_t prefix) {
  const at::Tensor cpu = tokens.to(at::kCPU);
  auto acc = cpu.accessor<int64_t, 2>();
  const std::set<int64_t> set(ids.begin(), ids.end());
  at::Tensor out = at::full({cpu.size(0)}, -1, at::kLong);
  for (int64_t i = 0; i < cpu.size(0); ++i) {
    for (int64_t t = 1; t < cpu.size(1); ++t) {
      if (set.count(acc[i][t])) {
        out[i] = t + prefix;
        break;
      }
    }
  }
  return out;
}

// Groups of layers whose attention maps and keys fit the budget together.
std::vector<std::vector<int64_t>> layer_chunks(int64_t layers, int64_t per_layer_bytes, int64_t budget) {
  const int64_t per_chunk = std::max<int64_t>(1, budget / std::max<int64_t>(1, per_layer_bytes));
  std::vector<std::vector<int64_t>> chunks;
  for (int64_t l = 0; l < layers; l += per_chunk) {
    std::vector<int64_t> c;
    for (int64_t j = l; j < std::min(layers, l + per_chunk); ++j) c.push_back(j);
    chunks.push_back(c);
  }
  return chunks;
}

at::Tensor find_parameter(modules::LanguageModel& model, const std::string& name) {
  for (const auto& p : model->named_parameters()) {
    if (p.key() == name) return p.value();
  }
  return {};
}

// Interventions (docs/metrics.md): select the entries at block b* from a clean pass, then one
// pass each with the entries zeroed, set to their channel mean, and with the sink key hidden.
InterventionReport measure_interventions(modules::LanguageModel& model, const at::Tensor& sequences,
                                         int64_t batch, at::Device device, const SpikeProfile& spike,
                                         double base_loss, const ProbeOptions& opts, const ProbeExtras& extras) {
  const modules::ModelOptions& mo = model->options();
  const int64_t N = sequences.size(0), T = sequences.size(1), C = mo.d_model;
  auto batch_tokens = [&](int64_t start) {
    return sequences.narrow(0, start, std::min(batch, N - start)).to(at::kLong).to(device);
  };
  InterventionReport iv;
  iv.selection = "spike";
  iv.block = spike.step_up;
  for (size_t b = 1; b < spike.blocks.size(); ++b) {
    if (spike.blocks[b].massive > 0) {
      iv.selection = "massive";
      iv.block = static_cast<int64_t>(b);
      break;
    }
  }
  const int64_t prefix = modules::prefix_tokens(mo);
  if (prefix > 0) {
    iv.sink = "stream position 0 (the sink token)";
  } else if (mo.attention.variant == "k_bias" || mo.attention.variant == "kv_bias") {
    iv.sink = "the learned key " + mo.attention.variant + " (key index 0)";
  } else {
    iv.sink = "stream position 0 (the first token), for queries t >= 1";
  }

  // Clean pass: the selected entries per batch, their per-channel sum for the mean.
  at::Tensor channel_on = at::zeros({C}, at::kBool);
  for (int64_t c : spike.spike_channels) channel_on[c] = true;
  std::vector<at::Tensor> masks;  // per batch (B, S, C) bool
  at::Tensor sum = at::zeros({C}, at::kDouble), count = at::zeros({C}, at::kLong);
  at::Tensor per_position;
  for (int64_t start = 0; start < N; start += batch) {
    ProbeRequest req;
    req.residual = true;
    const ForwardResult out = model->forward(batch_tokens(start), req);
    const at::Tensor h = out.residual.at(iv.block).to(at::kCPU).to(at::kDouble);  // (B, S, C)
    const at::Tensor a = h.abs();
    const int64_t B = h.size(0);
    at::Tensor mask;
    if (iv.selection == "massive") {  // the SpikeAccumulator criterion, per sequence
      const at::Tensor median = std::get<0>(a.reshape({B, -1}).median(1)).view({B, 1, 1});
      mask = (a > opts.massive_abs).logical_and(a >= median * opts.massive_ratio);
    } else {
      const at::Tensor top = token_top1(h);  // (B, S)
      const at::Tensor seq_top = std::get<0>(top.max(1, /*keepdim=*/true));
      mask = (top >= seq_top * extras.spike_token_fraction).unsqueeze(-1).logical_and(channel_on.view({1, 1, C}));
    }
    sum += h.masked_fill(mask.logical_not(), 0.0).sum(at::IntArrayRef{0, 1});
    count += mask.sum(at::IntArrayRef{0, 1});
    const at::Tensor pos = mask.sum(at::IntArrayRef{0, 2});  // (S,)
    per_position = per_position.defined() ? per_position + pos : pos;
    masks.push_back(mask);
  }
  iv.entries = count.sum().item<int64_t>();
  const at::Tensor mean = (sum / count.clamp_min(1).to(at::kDouble)).view({1, 1, C});
  for (int64_t c = 0; c < C; ++c) {
    const int64_t n = count[c].item<int64_t>();
    if (n == 0) continue;
    iv.channels[c] = n;
    iv.channel_mean[c] = mean[0][0][c].item<double>();
  }
  for (int64_t s = 0; s < per_position.size(0); ++s) {
    const int64_t n = per_position[s].item<int64_t>();
    if (n > 0) iv.positions[s] = n;
  }

  auto measure = [&](const std::function<void(ProbeRequest&, size_t)>& set) {
    double total = 0;
    size_t i = 0;
    for (int64_t start = 0; start < N; start += batch, ++i) {
      const at::Tensor tokens = batch_tokens(start);
      ProbeRequest req;
      set(req, i);
      total += loss_sum(model->forward(tokens, req).logits, tokens);
    }
    InterventionLoss l;
    l.measured = true;
    l.loss = total / static_cast<double>(N * (T - 1));
    l.delta = l.loss - base_loss;
    return l;
  };
  if (iv.entries > 0) {
    iv.zero = measure([&](ProbeRequest& req, size_t i) {
      req.intervention.residual.push_back({iv.block, false, masks[i], {}});
    });
    iv.mean = measure([&](ProbeRequest& req, size_t i) {
      req.intervention.residual.push_back({iv.block, false, masks[i], mean});
    });
  }
  iv.mask_sink = measure([](ProbeRequest& req, size_t) { req.intervention.sink_mask = modules::SinkMask::sink; });
  if (mo.attention.variant == "k_bias" || mo.attention.variant == "kv_bias") {
    iv.mask_first = measure([](ProbeRequest& req, size_t) { req.intervention.sink_mask = modules::SinkMask::first_position; });
    iv.mask_both = measure([](ProbeRequest& req, size_t) { req.intervention.sink_mask = modules::SinkMask::both; });
  }
  return iv;
}

}  // namespace

ProbeReport run_probe(modules::LanguageModel& model, const at::Tensor& sequences,
                      const ProbeOptions& opts, bool compact, const ProbeExtras& extras) {
  if (sequences.dim() != 2 || sequences.size(0) < 1 || sequences.size(1) < 2) {
    throw UserError("probe: sequences must be (N, T) with N >= 1 and T >= 2");
  }
  const modules::ModelOptions& mo = model->options();
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  at::Device device = at::kCPU;
  for (const auto& p : model->parameters()) {
    device = p.device();
    break;
  }

  ProbeReport r;
  r.compact = compact;
  r.options = opts;
  r.sequences = sequences.size(0);
  r.seq_len = sequences.size(1);
  r.layers = mo.n_layers;
  r.heads = mo.n_heads;
  r.prefix = modules::prefix_tokens(mo);
  const int64_t N = r.sequences, T = r.seq_len, S = T + r.prefix;
  const int64_t batch = std::max<int64_t>(1, opts.batch);
  const int64_t G = modules::effective_kv_heads(mo);
  const int64_t per_layer = 4 * batch * (mo.n_heads * S * (S + 2) + (compact ? 0 : G * (S + 2) * mo.head_dim));
  const auto chunks = layer_chunks(mo.n_layers, per_layer, extras.attention_budget_bytes);
  // The layers whose attention the compact probe's first forward pass requests. Probed layers
  // run explicit attention, the others the fused kernel, and the two differ in the last bits;
  // the full probe's residual pass requests the same layers so that its spike profile equals the
  // in-training (compact) one bit for bit.
  const auto compact_chunk0 = layer_chunks(mo.n_layers, 4 * batch * mo.n_heads * S * (S + 2),
                                           extras.attention_budget_bytes).front();

  SpikeOptions so;
  so.massive_abs = opts.massive_abs;
  so.massive_ratio = opts.massive_ratio;
  SpikeAccumulator spikes(so);
  SpikeAccumulator norm_spikes(so);
  auto add_norm_inputs = [&](const ForwardResult& out) {
    std::vector<at::Tensor> inputs;
    std::vector<std::string> names;
    for (const auto& np : out.norms) {
      if (np.input.dim() != 3) continue;  // qk-norms see (B, H, S, E) heads, not the stream
      inputs.push_back(np.input);
      names.push_back(np.name);
    }
    if (inputs.empty()) return;
    norm_spikes.add(inputs);
    r.norm_input_names = names;
  };
  SinkAccumulator sinks({opts.sink_epsilon, /*max_k=*/1}, mo.n_layers);
  double loss = 0;

  auto batch_tokens = [&](int64_t start) {
    return sequences.narrow(0, start, std::min(batch, N - start)).to(at::kLong).to(device);
  };

  // Full probe: a residual-only pass first, because spike tokens are chosen in the peak block.
  if (!compact) {
    for (int64_t start = 0; start < N; start += batch) {
      const at::Tensor tokens = batch_tokens(start);
      ProbeRequest req;
      req.residual = true;
      req.norms = true;
      req.attention = true;
      req.attention_layers = compact_chunk0;
      const ForwardResult out = model->forward(tokens, req);
      spikes.add(out.residual);
      add_norm_inputs(out);
      loss += loss_sum(out.logits, tokens);
    }
    r.spike = spikes.finish();
    r.geometry_block = r.spike.peak_block;
  }

  // Attention pass (layer chunks); chunk 0 also carries what the compact probe / geometry needs.
  std::vector<at::Tensor> geo_rows, geo_seq;                 // norm(h) of spike tokens
  std::vector<std::vector<std::vector<at::Tensor>>> key_rows(  // [layer][kv head] -> rows (E,)
      mo.n_layers, std::vector<std::vector<at::Tensor>>(G));
  std::string norm_source = "rms normalisation without gain (no matching norm probe)";
  for (int64_t start = 0; start < N; start += batch) {
    const at::Tensor tokens = batch_tokens(start);
    const int64_t B = tokens.size(0);
    const at::Tensor delim = extras.delimiter_ids.empty()
                                 ? at::Tensor()
                                 : first_delimiter(tokens, extras.delimiter_ids, r.prefix);
    std::vector<std::vector<int64_t>> spike_pos(B);  // stream positions of spike tokens
    for (size_t c = 0; c < chunks.size(); ++c) {
      ProbeRequest req;
      req.attention = true;
      req.attention_layers = chunks[c];
      req.keys = !compact;
      req.residual = c == 0;
      req.norms = c == 0;
      const ForwardResult out = model->forward(tokens, req);
      if (c == 0 && compact) {
        spikes.add(out.residual);
        add_norm_inputs(out);
        loss += loss_sum(out.logits, tokens);
      }
      if (c == 0 && !compact) {
        const at::Tensor hp = out.residual.at(r.geometry_block);  // (B, S, C)
        const at::Tensor top = token_top1(hp);                     // (B, S)
        const at::Tensor seq_top = std::get<0>(top.max(1, /*keepdim=*/true));
        const at::Tensor is_spike = top >= seq_top * extras.spike_token_fraction;
        const at::Tensor idx = is_spike.nonzero().to(at::kCPU);  // (M, 2)
        auto ia = idx.accessor<int64_t, 2>();
        for (int64_t i = 0; i < idx.size(0); ++i) spike_pos[ia[i][0]].push_back(ia[i][1]);
        at::Tensor normed;
        for (const auto& np : out.norms) {
          if (np.input.sizes() == hp.sizes() && at::equal(np.input, hp)) {
            normed = np.output.to(at::kCPU).to(at::kDouble);
            norm_source = np.name;
            break;
          }
        }
        if (!normed.defined()) normed = rms_normalize(hp, mo.norm.eps);
        for (int64_t b = 0; b < B; ++b) {
          for (int64_t s : spike_pos[b]) {
            geo_rows.push_back(normed[b][s]);
            geo_seq.push_back(at::full({1}, start + b, at::kLong));
          }
        }
      }
      for (size_t i = 0; i < out.probed_layers.size(); ++i) {
        const int64_t l = out.probed_layers[i];
        sinks.add_layer(l, out.attention.at(i), out.key_offset, delim);
        if (!compact && i < out.keys.size()) {
          const at::Tensor k = out.keys[i].to(at::kCPU).to(at::kDouble);  // (B, G, K, E)
          for (int64_t b = 0; b < B; ++b) {
            for (int64_t s : spike_pos[b]) {
              for (int64_t g = 0; g < k.size(1); ++g) key_rows[l][g].push_back(k[b][g][out.key_offset + s]);
            }
          }
        }
      }
    }
  }
  if (compact) r.spike = spikes.finish();
  if (!r.norm_input_names.empty()) {
    r.norm_inputs = norm_spikes.finish().blocks;
    for (size_t i = 0; i < r.norm_inputs.size(); ++i)
      if (r.norm_input_peak < 0 || r.norm_inputs[i].top1 > r.norm_inputs[r.norm_input_peak].top1)
        r.norm_input_peak = static_cast<int64_t>(i);
  }
  r.sink = sinks.finish();
  r.loss = loss / static_cast<double>(N * (T - 1));

  if (!compact) {
    r.norm_source = norm_source;
    r.spike_tokens = static_cast<int64_t>(geo_rows.size());
    if (!geo_rows.empty()) {
      const at::Tensor rows = at::stack(geo_rows);
      r.spike_token_cosine = cross_sequence_cosine(rows, at::cat(geo_seq));
      r.normalized_small_fraction = small_fraction(rows);
      r.key_rank = at::zeros({mo.n_layers, G}, at::kDouble);
      for (int64_t l = 0; l < mo.n_layers; ++l) {
        for (int64_t g = 0; g < G; ++g) {
          if (!key_rows[l][g].empty()) r.key_rank[l][g] = effective_rank(at::stack(key_rows[l][g]));
        }
      }
    }

    // Ubiquity: every sampled vocabulary token at position 0 of the first probe sequence.
    const int64_t M = std::min(extras.ubiquity_tokens, mo.vocab);
    if (M > 0) {
      auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(opts.seed));
      const at::Tensor sample = at::randperm(mo.vocab, gen, at::kLong).narrow(0, 0, M);
      std::vector<at::Tensor> top0, med;
      for (int64_t start = 0; start < M; start += batch) {
        const int64_t B = std::min(batch, M - start);
        at::Tensor tokens = sequences.narrow(0, 0, 1).to(at::kLong).repeat({B, 1});
        tokens.select(1, 0).copy_(sample.narrow(0, start, B));
        ProbeRequest req;
        req.residual = true;
        const ForwardResult out = model->forward(tokens.to(device), req);
        const at::Tensor hp = out.residual.at(r.geometry_block);
        top0.push_back(token_top1(hp).select(1, r.prefix));
        med.push_back(std::get<0>(hp.to(at::kCPU).to(at::kDouble).abs().reshape({B, -1}).median(1)));
      }
      const at::Tensor t0 = at::cat(top0), m0 = at::cat(med);
      r.ubiquity_tokens = M;
      r.ubiquity = spike_ubiquity(t0, at::zeros_like(m0),
                                  extras.ubiquity_fraction * r.spike.spike_magnitude * (1 - 1e-12), 0.0);
      r.ubiquity_massive = spike_ubiquity(t0, m0, opts.massive_abs, opts.massive_ratio);
    }

    // Quadratic amplifier of every SwiGLU layer.
    for (int64_t l = 0; l < mo.n_layers; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".ffn.";
      const at::Tensor wg = find_parameter(model, p + "w_gate.weight");
      const at::Tensor wu = find_parameter(model, p + "w_up.weight");
      const at::Tensor wd = find_parameter(model, p + "w_down.weight");
      if (!wg.defined() || !wu.defined() || !wd.defined()) continue;
      const at::Tensor u = quadratic_amplifier_norms(wg, wu, wd);  // (C,)
      AmplifierRow row;
      row.layer = l;
      row.block = 2 * l + 2;
      const auto top = u.topk(std::min<int64_t>(5, u.size(0)));
      for (int64_t i = 0; i < std::get<0>(top).size(0); ++i) {
        row.top.emplace_back(std::get<1>(top)[i].item<int64_t>(), std::get<0>(top)[i].item<double>());
      }
      row.median = u.median().item<double>();
      for (int64_t c : r.spike.spike_channels) row.spike_channel_max = std::max(row.spike_channel_max, u[c].item<double>());
      r.amplifier.push_back(row);
    }
    if (r.amplifier.empty()) r.notes.push_back("quadratic amplifier: no SwiGLU FFN weights (ffn.type is not swiglu)");
  }
  if (!compact) {
    r.interventions = measure_interventions(model, sequences, batch, device, r.spike, r.loss, opts, extras);
    if (!r.interventions.zero.measured)
      r.notes.push_back("zero / mean interventions not measured: no massive activation and no spike channel entry");
  } else {
    r.notes.push_back("interventions not measured: full probe only");
  }
  if (extras.delimiter_ids.empty()) r.notes.push_back("delimiter sink not measured: no delimiter token ids (synthetic data, or probe.delimiters)");
  if (was_training) model->train();
  return r;
}

// ---- JSON and table ----------------------------------------------------------------------

nlohmann::json tensor_json(const at::Tensor& t) {
  if (!t.defined()) return nullptr;
  const at::Tensor c = t.to(at::kCPU).to(at::kDouble).contiguous();
  if (c.dim() == 0) return c.item<double>();
  nlohmann::json out = nlohmann::json::array();
  for (int64_t i = 0; i < c.size(0); ++i) out.push_back(tensor_json(c[i]));
  return out;
}

namespace {
nlohmann::json finite(double v) {
  if (std::isfinite(v)) return v;
  return nullptr;
}
}  // namespace

nlohmann::json to_json(const ProbeReport& r) {
  using nlohmann::json;
  json j;
  j["compact"] = r.compact;
  j["probe"] = {{"sequences", r.sequences}, {"seq_len", r.seq_len}, {"batch", r.options.batch},
                {"sink_epsilon", r.options.sink_epsilon}, {"massive_abs", r.options.massive_abs},
                {"massive_ratio", r.options.massive_ratio}, {"seed", r.options.seed}};
  j["layers"] = r.layers;
  j["heads"] = r.heads;
  j["prefix"] = r.prefix;
  j["loss"] = finite(r.loss);
  const SpikeProfile& s = r.spike;
  json blocks = json::array();
  for (const auto& b : s.blocks) {
    blocks.push_back({{"top1", b.top1}, {"top3", b.top3}, {"median", b.median}, {"ratio", finite(b.ratio)},
                      {"massive", b.massive}});
  }
  json channels = json::object(), positions = json::object();
  for (const auto& [c, n] : s.massive_channels) channels[std::to_string(c)] = n;
  for (const auto& [p, n] : s.massive_positions) positions[std::to_string(p)] = n;
  j["spike"] = {{"magnitude", s.spike_magnitude}, {"peak_block", s.peak_block}, {"blocks", blocks},
                {"massive_total", s.massive_total}, {"massive_channels", channels},
                {"massive_positions", positions}, {"spike_channels", s.spike_channels},
                {"spike_channel_magnitude", s.spike_channel_magnitude}, {"step_up", s.step_up},
                {"step_down", s.step_down}, {"step_up_delta", s.step_up_delta},
                {"step_down_delta", s.step_down_delta}};
  if (r.norm_input_peak >= 0) {
    json top1 = json::array(), ratio = json::array();
    for (const auto& b : r.norm_inputs) {
      top1.push_back(b.top1);
      ratio.push_back(finite(b.ratio));
    }
    const auto& peak = r.norm_inputs[r.norm_input_peak];
    j["spike"]["norm_inputs"] = {{"names", r.norm_input_names}, {"top1", top1}, {"ratio", ratio},
                                 {"peak", r.norm_input_names[r.norm_input_peak]}, {"peak_top1", peak.top1},
                                 {"peak_ratio", finite(peak.ratio)}};
  }
  const SinkReport& k = r.sink;
  j["sink"] = {{"epsilon", k.epsilon}, {"mass", k.sink_mass}, {"mass_per_layer", k.mass_per_layer},
               {"sink_eps", k.sink_eps.empty() ? 0.0 : k.sink_eps[0]},
               {"sink_eps_per_layer", k.sink_eps_per_layer},
               {"alpha1", tensor_json(k.alpha.empty() ? at::Tensor() : k.alpha[0])},
               {"sink_eps_share", k.sink_eps_share}, {"sink_eps_share_per_layer", k.sink_eps_share_per_layer},
               {"alpha1_share", tensor_json(k.alpha1_share)},
               {"mass_per_head", tensor_json(k.mass)}, {"distance", tensor_json(k.distance)},
               {"locality_alpha_corr", finite(k.locality_alpha_corr)},
               {"bias_mass", tensor_json(k.bias_mass)}};
  if (k.delimiter_alpha.defined()) {
    j["sink"]["delimiter"] = {{"sequences", k.delimiter_sequences}, {"sink_eps", k.delimiter_sink_eps},
                              {"alpha", tensor_json(k.delimiter_alpha)}};
  }
  if (!r.compact) {
    j["geometry"] = {{"block", r.geometry_block}, {"spike_tokens", r.spike_tokens},
                     {"cosine", finite(r.spike_token_cosine)},
                     {"small_fraction", r.normalized_small_fraction}, {"norm", r.norm_source},
                     {"key_effective_rank", tensor_json(r.key_rank)}};
    j["ubiquity"] = {{"tokens", r.ubiquity_tokens}, {"relative", r.ubiquity}, {"massive", r.ubiquity_massive}};
    json amp = json::array();
    for (const auto& a : r.amplifier) {
      json top = json::array();
      for (const auto& [c, v] : a.top) top.push_back({{"channel", c}, {"norm", v}});
      amp.push_back({{"layer", a.layer}, {"block", a.block}, {"top", top}, {"median", a.median},
                     {"spike_channel_max", a.spike_channel_max}});
    }
    j["amplifier"] = amp;
    const InterventionReport& iv = r.interventions;
    auto loss_json = [](const InterventionLoss& l) -> json {
      if (!l.measured) return nullptr;
      return {{"loss", finite(l.loss)}, {"delta", finite(l.delta)}};
    };
    json ichannels = json::object(), ipositions = json::object(), imeans = json::object();
    for (const auto& [c, n] : iv.channels) ichannels[std::to_string(c)] = n;
    for (const auto& [p, n] : iv.positions) ipositions[std::to_string(p)] = n;
    for (const auto& [c, m] : iv.channel_mean) imeans[std::to_string(c)] = finite(m);
    j["interventions"] = {{"selection", iv.selection}, {"block", iv.block}, {"entries", iv.entries},
                          {"channels", ichannels}, {"positions", ipositions}, {"channel_mean", imeans},
                          {"sink", iv.sink}, {"zero", loss_json(iv.zero)}, {"mean", loss_json(iv.mean)},
                          {"mask_sink", loss_json(iv.mask_sink)}, {"mask_first_position", loss_json(iv.mask_first)},
                          {"mask_both", loss_json(iv.mask_both)}};
  }
  j["notes"] = r.notes;
  return j;
}

std::string to_table(const ProbeReport& r) {
  std::ostringstream o;
  o << std::setprecision(4);
  o << "probe: " << r.sequences << " sequences x " << r.seq_len << " tokens, " << r.layers << " layers x "
    << r.heads << " heads" << (r.compact ? " (compact)" : "") << "\n";
  o << "loss " << r.loss << "  perplexity " << std::exp(r.loss) << "\n\n";
  o << "block  kind   top1        top3        median      top1/median  massive\n";
  for (size_t b = 0; b < r.spike.blocks.size(); ++b) {
    const auto& s = r.spike.blocks[b];
    const char* kind = b == 0 ? "embed" : (b % 2 ? "attn " : "ffn  ");
    o << std::setw(5) << b << "  " << kind << "  " << std::setw(10) << s.top1 << "  " << std::setw(10) << s.top3
      << "  " << std::setw(10) << s.median << "  " << std::setw(11) << s.ratio << "  " << s.massive << "\n";
  }
  o << "\nspike magnitude " << r.spike.spike_magnitude << " (block " << r.spike.peak_block << ")"
    << "  step-up block " << r.spike.step_up << " (+" << r.spike.step_up_delta << ")"
    << "  step-down block " << r.spike.step_down << " (" << r.spike.step_down_delta << ")\n";
  if (r.norm_input_peak >= 0) {
    const auto& pk = r.norm_inputs[r.norm_input_peak];
    o << "largest norm input " << r.norm_input_names[r.norm_input_peak] << ": top-1 " << pk.top1 << ", top-1/median "
      << pk.ratio << "\n";
  }
  o << "massive entries " << r.spike.massive_total << "  channels [";
  for (const auto& [c, n] : r.spike.massive_channels) o << " " << c << "x" << n;
  o << " ]  positions [";
  for (const auto& [p, n] : r.spike.massive_positions) o << " " << p << "x" << n;
  o << " ]  spike channels [";
  for (int64_t c : r.spike.spike_channels) o << " " << c;
  o << " ]\n\n";
  o << "layer  sink mass  Sink^" << r.sink.epsilon << "  mean distance\n";
  for (int64_t l = 0; l < r.sink.layers; ++l) {
    o << std::setw(5) << l << "  " << std::setw(9) << r.sink.mass_per_layer[l] << "  " << std::setw(9)
      << r.sink.sink_eps_per_layer[l] << "  " << r.sink.distance[l].mean().item<double>() << "\n";
  }
  o << "sink mass " << r.sink.sink_mass << "  Sink_1^" << r.sink.epsilon << " "
    << (r.sink.sink_eps.empty() ? 0.0 : r.sink.sink_eps[0]) << " (row share " << r.sink.sink_eps_share
    << ")  corr(distance, alpha1) " << r.sink.locality_alpha_corr << "\n";
  if (r.sink.delimiter_alpha.defined()) {
    o << "first-delimiter Sink^" << r.sink.epsilon << " " << r.sink.delimiter_sink_eps << " over "
      << r.sink.delimiter_sequences << " sequences\n";
  }
  if (!r.compact) {
    o << "\nspike tokens " << r.spike_tokens << " at block " << r.geometry_block << ": cosine of norm(h) across sequences "
      << r.spike_token_cosine << ", fraction |norm(h)| < 0.01 " << r.normalized_small_fraction << " (" << r.norm_source
      << ")\n";
    if (r.key_rank.defined()) {
      o << "key effective rank per layer (mean over kv heads):";
      for (int64_t l = 0; l < r.key_rank.size(0); ++l) o << " " << r.key_rank[l].mean().item<double>();
      o << "\n";
    }
    o << "ubiquity over " << r.ubiquity_tokens << " tokens: relative " << r.ubiquity << ", massive " << r.ubiquity_massive
      << "\n";
    for (const auto& a : r.amplifier) {
      o << "amplifier layer " << a.layer << ": top";
      for (const auto& [c, v] : a.top) o << " " << c << ":" << v;
      o << "  median " << a.median << "  spike channels max " << a.spike_channel_max << "\n";
    }
    const InterventionReport& iv = r.interventions;
    o << "\ninterventions: " << iv.entries << " " << iv.selection << " entries set after block " << iv.block
      << ", channels [";
    for (const auto& [c, n] : iv.channels) o << " " << c << "x" << n;
    o << " ]  positions [";
    for (const auto& [p, n] : iv.positions) o << " " << p << "x" << n;
    o << " ]\n";
    auto row = [&](const char* name, const InterventionLoss& l) {
      o << "  " << std::left << std::setw(10) << name << std::right;
      if (l.measured) {
        o << "loss " << l.loss << "  change " << (l.delta >= 0 ? "+" : "") << l.delta << "\n";
      } else {
        o << "not measured\n";
      }
    };
    row("zero", iv.zero);
    row("mean", iv.mean);
    row("mask_sink", iv.mask_sink);
    o << "  (mask_sink hides " << iv.sink << ")\n";
    if (iv.mask_first.measured) {
      row("mask_pos0", iv.mask_first);
      row("mask_both", iv.mask_both);
      o << "  (mask_pos0 hides stream position 0; mask_both hides it and the learned key)\n";
    }
  }
  for (const auto& n : r.notes) o << "note: " << n << "\n";
  return o.str();
}

}  // namespace ablate::analysis
