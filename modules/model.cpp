// The attention sublayer, the block (placement recipe around each sublayer) and the LM.
#include "modules/model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/init.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <map>
#include <sstream>

#include "data/core/errors.h"
#include "modules/kernels.h"

namespace ablate::modules {

namespace {
double output_std(const ModelOptions& o) {
  return o.init.scaled_residual ? o.init.std / std::sqrt(2.0 * double(o.n_layers)) : o.init.std;
}
}  // namespace

int64_t effective_kv_heads(const ModelOptions& o) { return o.n_kv_heads > 0 ? o.n_kv_heads : o.n_heads; }

int64_t effective_ffn_hidden(const ModelOptions& o) {
  int64_t def = ffn_registry().get(o.ffn.type).default_hidden(o.d_model);
  if (def == 0) return 0;  // no hidden layer (linear, none)
  return o.ffn.hidden > 0 ? o.ffn.hidden : def;
}

int64_t prefix_tokens(const ModelOptions& o) {
  return attention_registry().get(o.attention.variant).create(o.attention)->prefix_tokens();
}

at::Tensor residual_mask(int64_t positions, int64_t channels, const std::vector<std::pair<int64_t, int64_t>>& entries) {
  auto mask = at::zeros({1, positions, channels}, at::kBool);
  for (const auto& [s, c] : entries) {
    TORCH_CHECK(s >= 0 && s < positions && c >= 0 && c < channels, "residual_mask: entry (", s, ", ", c,
                ") outside (", positions, ", ", channels, ")");
    mask[0][s][c] = true;
  }
  return mask;
}

namespace {
// The stream after block b with the intervention's residual edits for b applied.
at::Tensor edit_residual(const Intervention& iv, int64_t b, at::Tensor h) {
  for (const auto& e : iv.residual) {
    if (b != e.block && !(e.through_end && b > e.block)) continue;
    const auto mask = e.mask.to(h.device());
    h = e.values.defined() ? at::where(mask, e.values.to(h.device(), h.scalar_type()), h) : h.masked_fill(mask, 0.0);
  }
  return h;
}

// Sequence positions of the keys SinkMask hides (explicit_attention's `hidden`); `leading` = the
// variant's extra keys before stream position 0 (k_bias / kv_bias: 1).
std::vector<int64_t> hidden_keys(SinkMask m, int64_t leading) {
  switch (m) {
    case SinkMask::none: return {};
    case SinkMask::sink: return {leading > 0 ? int64_t{-1} : int64_t{0}};
    case SinkMask::first_position: return {0};
    case SinkMask::both: return leading > 0 ? std::vector<int64_t>{-1, 0} : std::vector<int64_t>{0};
  }
  return {};
}
}  // namespace

void LayerProbe::norm(const std::string& name, const at::Tensor& in, const at::Tensor& out) const {
  if (request->norms) result->norms.push_back({prefix.empty() ? name : prefix + "." + name, in.detach(), out.detach()});
}

// --- Attention --------------------------------------------------------------------------------

AttentionImpl::AttentionImpl(const ModelOptions& o)
    : heads_(o.n_heads), kv_heads_(effective_kv_heads(o)), head_dim_(o.head_dim) {
  TORCH_CHECK(heads_ % kv_heads_ == 0, "n_heads ", heads_, " is not a multiple of n_kv_heads ", kv_heads_);
  const int64_t C = o.d_model, H = heads_, G = kv_heads_, E = head_dim_;
  wq_ = register_module("wq", make_linear(C, H * E, o.init.std));
  wk_ = register_module("wk", make_linear(C, G * E, o.init.std));
  wv_ = register_module("wv", make_linear(C, G * E, o.init.std));
  wo_ = register_module("wo", make_linear(H * E, C, output_std(o)));
  if (o.norm.qk_norm) {
    const auto& norm = norm_registry().get(o.norm.type);
    q_norm_ = register_module("q_norm", norm.create(E, o.norm));
    k_norm_ = register_module("k_norm", norm.create(E, o.norm));
  }
  kernel_ = attention_registry().get(o.attention.variant).create(o.attention);
  kernel_->build(*this, G, E, o.init.std);
  gate_per_head_ = gate_granularity_registry().get(o.attention.gate.granularity).per_head(E);
  gate_ = gate_kind_registry().get(o.attention.gate.kind).create();
  gate_->build(*this, C, H * gate_per_head_, o.init.std);
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const LayerContext& ctx, const LayerProbe* probe) {
  const int64_t B = x.size(0), S = x.size(1), H = heads_, G = kv_heads_, E = head_dim_;
  at::Tensor q, k, v;
  // A conditional gate's projection joins the q/k/v product (one pass over x, one backward).
  at::Tensor gate_logits;
  std::vector<at::Tensor> weights{wq_->weight, wk_->weight, wv_->weight};
  if (gate_->source() == GateSource::normalized_input && gate_->projection_weight().defined())
    weights.push_back(gate_->projection_weight());
  auto packed = kernels::packed_linear(x, weights);
  if (packed.defined()) {
    std::vector<int64_t> sizes;
    for (const auto& w : weights) sizes.push_back(w.size(0));
    auto parts = packed.split_with_sizes(sizes, -1);
    q = parts[0], k = parts[1], v = parts[2];
    if (parts.size() == 4) gate_logits = parts[3];
  } else {
    q = wq_(x), k = wk_(x), v = wv_(x);
  }
  q = q.view({B, S, H, E}).transpose(1, 2);  // (B, H, S, E)
  k = k.view({B, S, G, E}).transpose(1, 2);  // (B, G, S, E)
  v = v.view({B, S, G, E}).transpose(1, 2);  // (B, G, S, E)
  if (q_norm_) {
    auto qn = q_norm_->forward(q), kn = k_norm_->forward(k);
    if (probe) {
      probe->norm("attn.q_norm", q, qn);
      probe->norm("attn.k_norm", k, kn);
    }
    q = qn;
    k = kn;
  }
  q = ctx.position->rotate(q);
  k = ctx.position->rotate(k);

  at::Tensor out;  // (B, H, S, E)
  const SinkMask sink_mask = probe ? probe->request->intervention.sink_mask : SinkMask::none;
  if (probe && (probe->explicit_attention || sink_mask != SinkMask::none)) {
    std::vector<int64_t> hidden;
    if (sink_mask != SinkMask::none)
      hidden = hidden_keys(sink_mask, kernel_->extend(k.narrow(2, 0, 1), v.narrow(2, 0, 1)).before);
    auto ex = explicit_attention(*kernel_, q, k, v, hidden);
    if (probe->explicit_attention) {
      if (probe->request->keys) probe->result->keys.push_back(ex.keys.k.detach());
      if (probe->request->attention) probe->result->attention.push_back(ex.probabilities.detach());
      probe->result->key_offset = ex.keys.before;
    }
    out = ex.out;
  } else {
    out = kernel_->fast(q, k, v);
  }
  out = out.transpose(1, 2);  // (B, S, H, E)

  at::Tensor source;
  switch (gate_->source()) {
    case GateSource::none: break;
    case GateSource::normalized_input: source = x; break;
    case GateSource::token_embedding: source = ctx.token_embedding; break;
    case GateSource::position_embedding: source = ctx.gate_position; break;
  }
  auto g = gate_logits.defined() ? gate_->from_logits(gate_logits) : gate_->gate(source);  // (B or 1, S or 1, H · per_head)
  if (g.defined()) out = out * g.view({g.size(0), g.size(1), H, gate_per_head_});
  return wo_(out.reshape({B, S, H * E}));
}

// --- Block ------------------------------------------------------------------------------------

BlockImpl::BlockImpl(const ModelOptions& o) : recipe_(placement_registry().get(o.norm.placement)) {
  const auto& norm = norm_registry().get(o.norm.type);
  const auto& ffn = ffn_registry().get(o.ffn.type);
  const int64_t C = o.d_model;
  if (recipe_.norm_input || recipe_.norm_after_add) attn_norm_ = register_module("attn_norm", norm.create(C, o.norm));
  attn_ = register_module("attn", Attention(o));
  if (recipe_.norm_output) attn_out_norm_ = register_module("attn_out_norm", norm.create(C, o.norm));
  if (ffn.present) {
    if (recipe_.norm_input || recipe_.norm_after_add) ffn_norm_ = register_module("ffn_norm", norm.create(C, o.norm));
    ffn_ = register_module("ffn", ffn.create(C, effective_ffn_hidden(o), o.init.std, output_std(o)));
    if (recipe_.norm_output) ffn_out_norm_ = register_module("ffn_out_norm", norm.create(C, o.norm));
  }
}

template <class F>
at::Tensor BlockImpl::sublayer(const at::Tensor& x, const std::string& name, const std::shared_ptr<NormImpl>& norm,
                               const std::shared_ptr<NormImpl>& out_norm, const LayerProbe* probe, F&& f) {
  auto apply = [&](NormImpl& n, const std::string& n_name, const at::Tensor& t) {
    auto y = n.forward(t);
    if (probe) probe->norm(n_name, t, y);
    return y;
  };
  at::Tensor u = recipe_.norm_input ? apply(*norm, name + "_norm", x) : x;
  at::Tensor y = f(u);
  if (recipe_.norm_output) y = apply(*out_norm, name + "_out_norm", y);
  at::Tensor h = x + y;
  if (recipe_.norm_after_add) h = apply(*norm, name + "_norm", h);
  return h;
}

at::Tensor BlockImpl::forward(const at::Tensor& x, const LayerContext& ctx, const LayerProbe* probe) {
  // Residual edits of an intervention, then the probe record, after block b.
  auto finish = [&](at::Tensor h, int64_t b) {
    if (!probe) return h;
    if (!probe->request->intervention.residual.empty()) h = edit_residual(probe->request->intervention, b, h);
    if (probe->request->residual) probe->result->residual.push_back(h.detach());
    return h;
  };
  const int64_t b = probe ? 2 * probe->layer + 1 : 0;
  auto h = sublayer(x, "attn", attn_norm_, attn_out_norm_, probe,
                    [&](const at::Tensor& u) { return attn_->forward(u, ctx, probe); });
  h = finish(h, b);
  if (ffn_) h = sublayer(h, "ffn", ffn_norm_, ffn_out_norm_, probe, [&](const at::Tensor& u) { return ffn_->forward(u); });
  return finish(h, b + 1);  // attention-only models: the FFN block is the identity
}

// --- Language model ---------------------------------------------------------------------------

namespace {

// A model whose parameters alone exceed this machine's memory would end in an allocator abort
// (LibTorch logs a fatal error), not an exception: refuse it first, as a config error.
void check_fits_in_memory(const ModelOptions& o) {
  const double C = o.d_model, L = o.n_layers, H = o.n_heads, E = o.head_dim, V = o.vocab,
               F = static_cast<double>(effective_ffn_hidden(o)), T = o.max_seq_len;
  // An upper estimate of parameter_count (embeddings, attention, a gated FFN, positions), in double:
  // within the schema's bounds the exact int64 closed form can overflow.
  const double params = 2 * V * C + L * (4 * C * H * E + 3 * C * F) + T * C;
  const double bytes = params * 4;
  const double ram = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGE_SIZE));
  if (ram > 0 && bytes > ram) {
    std::ostringstream msg;
    msg << std::setprecision(3) << "model: about " << params << " parameters need " << bytes / (1 << 30)
        << " GiB in fp32, more than this machine's " << ram / (1 << 30)
        << " GiB of memory (check model.d_model, n_layers, n_heads, head_dim, vocab, ffn.hidden)";
    throw UserError(msg.str());
  }
}

}  // namespace

LanguageModelImpl::LanguageModelImpl(const ModelOptions& o)
    : options_(o), prefix_(prefix_tokens(o)), recipe_(placement_registry().get(o.norm.placement)) {
  TORCH_CHECK(o.max_seq_len > 0, "ModelOptions::max_seq_len must be resolved (> 0)");
  check_fits_in_memory(o);
  const int64_t C = o.d_model, positions = o.max_seq_len + prefix_;
  const uint64_t seed = at::detail::getDefaultCPUGenerator().current_seed();
  InitRecorder recorder;
  torch::NoGradGuard no_grad;
  embed_ = register_module("embed", torch::nn::Embedding(o.vocab, C));
  init_normal(embed_->weight, o.init.std);
  if (prefix_ > 0) {
    sink_token_ = register_parameter("sink_token", at::empty({prefix_, C}));
    init_normal(sink_token_, o.init.std);
  }
  position_ = register_module("pos_embed", position_registry().get(o.position.type).create(o, positions));
  if (gate_kind_registry().get(o.attention.gate.kind).create()->source() == GateSource::position_embedding) {
    gate_pos_embed_ = register_module("gate_pos_embed", torch::nn::Embedding(positions, C));
    init_normal(gate_pos_embed_->weight, o.init.std);
  }
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.n_layers; ++i) layers_->push_back(Block(o));
  if (recipe_.final_norm) final_norm_ = register_module("final_norm", norm_registry().get(o.norm.type).create(C, o.norm));
  if (!o.tie_embeddings) lm_head_ = register_module("lm_head", make_linear(C, o.vocab, o.init.std));
  if (o.init.by_name) redraw_by_name(seed, recorder.draws());
}

// Redraws every recorded parameter from its own generator, seeded by FNV-1a of its name mixed
// with the model seed, so its values depend on (seed, name, shape, std) only.
void LanguageModelImpl::redraw_by_name(uint64_t seed, const std::vector<std::pair<at::Tensor, double>>& draws) {
  std::map<const c10::TensorImpl*, double> std_of;
  for (const auto& [t, std] : draws) std_of[t.unsafeGetTensorImpl()] = std;
  at::NoGradGuard no_grad;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    auto it = std_of.find(item.value().unsafeGetTensorImpl());
    if (it == std_of.end()) continue;  // constant init (gains, biases, alphas)
    uint64_t h = 1469598103934665603ULL ^ (seed * 0x9E3779B97F4A7C15ULL);
    for (unsigned char c : item.key()) h = (h ^ c) * 1099511628211ULL;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(h);
    auto fresh = at::empty(item.value().sizes(), item.value().options().device(at::kCPU));
    fresh.normal_(0.0, it->second, gen);
    item.value().copy_(fresh);
  }
}

ForwardResult LanguageModelImpl::forward(const at::Tensor& tokens, const ProbeRequest& probe) {
  TORCH_CHECK(tokens.dim() == 2, "tokens must be (B, T), got ", tokens.sizes());
  const int64_t B = tokens.size(0), T = tokens.size(1), P = prefix_, S = P + T, C = options_.d_model;
  if (T > options_.max_seq_len)
    throw UserError("sequence of " + std::to_string(T) + " tokens is longer than model.max_seq_len " +
                    std::to_string(options_.max_seq_len));
  const bool probing = probe.any();
  const Intervention& iv = probe.intervention;
  const bool intervening = iv.any();
  for (const auto& e : iv.residual) {
    TORCH_CHECK(e.block >= 0 && e.block <= 2 * options_.n_layers, "ResidualEdit::block ", e.block, " outside 0..",
                2 * options_.n_layers);
    TORCH_CHECK(e.mask.defined() && e.mask.scalar_type() == at::kBool && e.mask.dim() <= 3,
                "ResidualEdit::mask must be a bool tensor broadcastable to (B, S, C)");
    TORCH_CHECK(!e.values.defined() || e.values.is_floating_point(), "ResidualEdit::values must be floating point");
  }
  ForwardResult r;
  r.prefix = P;

  auto e = embed_(tokens);  // (B, T, C)
  if (P > 0) e = at::cat({sink_token_.to(e.scalar_type()).unsqueeze(0).expand({B, P, C}), e}, 1);  // (B, S, C)
  auto x = position_->embed(e);
  LayerContext ctx;
  ctx.position = position_.get();
  ctx.token_embedding = e;
  if (gate_pos_embed_) ctx.gate_position = gate_pos_embed_->weight.narrow(0, 0, S).unsqueeze(0);  // (1, S, C)
  if (intervening && !iv.residual.empty()) x = edit_residual(iv, 0, x);
  if (probing && probe.residual) r.residual.push_back(x.detach());

  for (int64_t i = 0; i < options_.n_layers; ++i) {
    LayerProbe lp;
    if (probing || intervening) {
      lp.request = &probe;
      lp.result = &r;
      lp.prefix = "layers." + std::to_string(i);
      lp.layer = i;
      const auto& only = probe.attention_layers;
      lp.explicit_attention =
          (probe.keys || probe.attention) && (only.empty() || std::find(only.begin(), only.end(), i) != only.end());
      if (lp.explicit_attention) r.probed_layers.push_back(i);
    }
    x = layers_[i]->as<BlockImpl>()->forward(x, ctx, probing || intervening ? &lp : nullptr);
  }
  if (final_norm_) {
    auto y = final_norm_->forward(x);
    if (probing && probe.norms) r.norms.push_back({"final_norm", x.detach(), y.detach()});
    x = y;
  }
  x = x.narrow(1, P, T);  // the prepended positions have no logits
  r.hidden = x;
  r.head_weight = lm_head_ ? lm_head_->weight : embed_->weight;
  if (probe.logits) r.logits = at::linear(x, r.head_weight);  // (B, T, V)
  return r;
}

bool LanguageModelImpl::decays(const std::string& name, const at::Tensor& p) {
  auto ends_with = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return p.dim() >= 2 && !ends_with("_bias");
}

// --- Counts and summary -----------------------------------------------------------------------

int64_t parameter_count(const ModelOptions& o) {
  const int64_t C = o.d_model, L = o.n_layers, H = o.n_heads, G = effective_kv_heads(o), E = o.head_dim,
                V = o.vocab;
  const auto& norm = norm_registry().get(o.norm.type);
  const auto& recipe = placement_registry().get(o.norm.placement);
  const auto& ffn = ffn_registry().get(o.ffn.type);
  auto kernel = attention_registry().get(o.attention.variant).create(o.attention);
  auto gate = gate_kind_registry().get(o.attention.gate.kind).create();
  const int64_t P = kernel->prefix_tokens(), positions = o.max_seq_len + P;
  const int64_t n_gate = H * gate_granularity_registry().get(o.attention.gate.granularity).per_head(E);

  int64_t attn = 2 * C * H * E + 2 * C * G * E + kernel->parameters(G, E) + gate->parameters(C, n_gate) +
                 (o.norm.qk_norm ? 2 * norm.parameters(E) : 0);
  int64_t sublayers = ffn.present ? 2 : 1;
  int64_t layer = attn + ffn.parameters(C, effective_ffn_hidden(o)) +
                  sublayers * recipe.norms_per_sublayer() * norm.parameters(C);
  int64_t total = V * C + P * C + position_registry().get(o.position.type).parameters(C, positions) + L * layer +
                  (recipe.final_norm ? norm.parameters(C) : 0) + (o.tie_embeddings ? 0 : V * C);
  if (gate->source() == GateSource::position_embedding) total += positions * C;
  return total;
}

std::string model_summary(const ModelOptions& o) {
  LanguageModel model(o);
  std::ostringstream s;
  auto yes = [](bool b) { return b ? "yes" : "no"; };
  const auto& recipe = placement_registry().get(o.norm.placement);
  s << "model: " << o.n_layers << " layers, d_model " << o.d_model << ", " << o.n_heads << " heads x "
    << o.head_dim << " (" << effective_kv_heads(o) << " kv heads), vocab " << o.vocab << ", max_seq_len "
    << o.max_seq_len << "\n";
  s << "  norm       " << o.norm.type << ", placement " << o.norm.placement << " (final norm: " << yes(recipe.final_norm)
    << "), qk_norm " << (o.norm.qk_norm ? "on" : "off") << "\n";
  s << "  attention  " << o.attention.variant << "; fast path: " << attention_registry().get(o.attention.variant).fast_path
    << "\n";
  s << "  gate       " << o.attention.gate.kind;
  if (o.attention.gate.kind != gate_kind_names().front()) s << " (" << o.attention.gate.granularity << ")";
  s << "\n  ffn        " << o.ffn.type << ", hidden " << effective_ffn_hidden(o) << "\n";
  s << "  positions  " << o.position.type << " (position.base " << o.position.base << ", used by rope)\n";
  s << "  head       " << (o.tie_embeddings ? "tied to embed.weight" : "lm_head (untied)") << "\n\n";

  auto shape = [](const at::Tensor& t) {
    std::string r;
    for (auto d : t.sizes()) r += (r.empty() ? "" : " x ") + std::to_string(d);
    return r.empty() ? std::string("scalar") : r;
  };
  s << std::left << std::setw(36) << "parameter" << std::setw(16) << "shape" << std::right << std::setw(14) << "count"
    << "  decay\n";
  int64_t real = 0, layer0 = 0, embeddings = 0;
  bool folded = false;
  for (const auto& p : model->named_parameters()) {
    const auto& name = p.key();
    real += p.value().numel();
    bool in_layer = name.rfind("layers.", 0) == 0;
    if (in_layer && name.rfind("layers.0.", 0) != 0) {  // every layer has layer 0's parameters
      if (!folded)
        s << std::left << std::setw(52) << ("layers.1.." + std::to_string(o.n_layers - 1) + " (as layers.0)")
          << std::right << std::setw(14) << layer0 * (o.n_layers - 1) << "\n";
      folded = true;
      continue;
    }
    if (in_layer) layer0 += p.value().numel();
    if (name == "embed.weight" || name == "lm_head.weight" || name == "pos_embed.weight") embeddings += p.value().numel();
    s << std::left << std::setw(36) << name << std::setw(16) << shape(p.value()) << std::right << std::setw(14)
      << p.value().numel() << "  " << yes(LanguageModelImpl::decays(name, p.value())) << "\n";
  }
  s << "\nper layer " << layer0 << "; embeddings and head " << embeddings << "; non-embedding " << real - embeddings
    << "\ntotal " << real << " parameters (closed form: " << parameter_count(o) << ")\n";
  return s.str();
}

}  // namespace ablate::modules
