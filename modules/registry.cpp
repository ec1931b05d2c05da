// Every variant of every axis, each defined next to its registration. Adding a variant means
// adding a class and one `r.add(...)` here; the config layer, `model summary`, docs and the
// parametrised tests pick it up from names(). Formulas: docs/model.md.
#include <ATen/ATen.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/embedding.h>

#include <cmath>
#include <limits>
#include <mutex>
#include <utility>

#include "modules/components.h"
#include "modules/kernels.h"

namespace ablate::modules {

namespace {
thread_local std::vector<std::pair<at::Tensor, double>>* init_record = nullptr;
}  // namespace

void init_normal(const at::Tensor& t, double std) {
  torch::NoGradGuard no_grad;
  t.normal_(0.0, std);
  if (init_record) init_record->emplace_back(t, std);
}

InitRecorder::InitRecorder() : previous_(init_record) { init_record = &draws_; }
InitRecorder::~InitRecorder() { init_record = previous_; }

torch::nn::Linear make_linear(int64_t in, int64_t out, double std) {
  torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(false));
  init_normal(l->weight, std);
  return l;
}

at::Tensor repeat_kv(const at::Tensor& x, int64_t heads) {
  int64_t g = x.size(1);
  return g == heads ? x : x.repeat_interleave(heads / g, /*dim=*/1);
}

namespace {

// --- Norms ------------------------------------------------------------------------------------

// y = x / sqrt(mean(x²) + eps) · weight
class RmsNorm : public NormImpl {
 public:
  RmsNorm(int64_t dim, double eps) : eps_(eps) { weight_ = register_parameter("weight", at::ones({dim})); }
  at::Tensor forward(const at::Tensor& x) override {
    return kernels::rms_norm(x, weight_, eps_);
  }

 private:
  double eps_;
  at::Tensor weight_;
};

// y = (x - mean) / sqrt(var + eps) · weight + bias (biased variance)
class LayerNorm : public NormImpl {
 public:
  LayerNorm(int64_t dim, double eps) : dim_(dim), eps_(eps) {
    weight_ = register_parameter("weight", at::ones({dim}));
    bias_ = register_parameter("bias", at::zeros({dim}));
  }
  at::Tensor forward(const at::Tensor& x) override { return at::layer_norm(x, {dim_}, weight_, bias_, eps_); }

 private:
  int64_t dim_;
  double eps_;
  at::Tensor weight_, bias_;
};

// Dynamic tanh (Zhu et al.): y = weight · tanh(alpha · x) + bias, alpha one learnable scalar.
class DynamicTanh : public NormImpl {
 public:
  DynamicTanh(int64_t dim, double alpha) {
    alpha_ = register_parameter("alpha", at::full({1}, alpha));
    weight_ = register_parameter("weight", at::ones({dim}));
    bias_ = register_parameter("bias", at::zeros({dim}));
  }
  at::Tensor forward(const at::Tensor& x) override { return at::tanh(alpha_ * x) * weight_ + bias_; }

 private:
  at::Tensor alpha_, weight_, bias_;
};

// --- FFNs -------------------------------------------------------------------------------------

// w_down(silu(w_gate x) ⊙ w_up x)
class SwiGlu : public FfnImpl {
 public:
  SwiGlu(int64_t d, int64_t h, double std, double out_std) {
    w_gate_ = register_module("w_gate", make_linear(d, h, std));
    w_up_ = register_module("w_up", make_linear(d, h, std));
    w_down_ = register_module("w_down", make_linear(h, d, out_std));
  }
  at::Tensor forward(const at::Tensor& x) override {
    auto packed = kernels::packed_linear(x, {w_gate_->weight, w_up_->weight});
    if (packed.defined()) return w_down_(kernels::swiglu(packed));
    return w_down_(at::silu(w_gate_(x)) * w_up_(x));
  }

 private:
  torch::nn::Linear w_gate_{nullptr}, w_up_{nullptr}, w_down_{nullptr};
};

// w_down(gelu(w_up x)), exact (erf) GELU.
class GeluMlp : public FfnImpl {
 public:
  GeluMlp(int64_t d, int64_t h, double std, double out_std) {
    w_up_ = register_module("w_up", make_linear(d, h, std));
    w_down_ = register_module("w_down", make_linear(h, d, out_std));
  }
  at::Tensor forward(const at::Tensor& x) override { return w_down_(at::gelu(w_up_(x))); }

 private:
  torch::nn::Linear w_up_{nullptr}, w_down_{nullptr};
};

// w x: one linear map, the sublayer's output projection.
class LinearFfn : public FfnImpl {
 public:
  LinearFfn(int64_t d, double out_std) { w_ = register_module("w", make_linear(d, d, out_std)); }
  at::Tensor forward(const at::Tensor& x) override { return w_(x); }

 private:
  torch::nn::Linear w_{nullptr};
};

int64_t swiglu_hidden(int64_t d) {
  int64_t h = (8 * d + 2) / 3;  // ceil(8d/3)
  return (h + 63) / 64 * 64;
}

// --- Positions --------------------------------------------------------------------------------

// Rotary embedding, rotate-half convention (as Hugging Face Llama): the pair (x_i, x_{i+E/2})
// turns by angle s · base^(-2i/E) at position s. The cos/sin tables are a pure function of
// (S, E, dtype, device) and are memoised for the last key seen (a performance cache, not state:
// they take no gradient and every call returns the same values as recomputing them; 2·L calls
// per forward otherwise rebuild them with ~10 small ops each — docs/performance.md).
class Rope : public PositionImpl {
 public:
  explicit Rope(double base) : base_(base) {}
  at::Tensor rotate(const at::Tensor& x) override {
    int64_t S = x.size(-2), E = x.size(-1);
    auto [cos, sin] = tables(S, E, x);
    return kernels::rope(x, cos, sin);
  }

 private:
  std::pair<at::Tensor, at::Tensor> tables(int64_t S, int64_t E, const at::Tensor& x) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto dtype = kernels::compute_dtype(x);  // float32 for bf16 under CPU autocast (widened there)
    if (!(cached_.first.defined() && S == S_ && E == E_ && cached_.first.scalar_type() == dtype &&
          cached_.first.device() == x.device())) {
      at::NoGradGuard no_grad;
      auto dopt = at::TensorOptions().dtype(at::kDouble).device(x.device());
      auto inv = at::pow(base_, -at::arange(0, E, 2, dopt) / double(E));  // (E/2)
      auto angles = at::outer(at::arange(S, dopt), inv);                  // (S, E/2)
      cached_ = {at::cat({angles.cos(), angles.cos()}, -1).to(dtype), at::cat({angles.sin(), angles.sin()}, -1).to(dtype)};
      S_ = S;
      E_ = E;
    }
    return cached_;
  }
  double base_;
  std::mutex mutex_;
  int64_t S_ = 0, E_ = 0;
  std::pair<at::Tensor, at::Tensor> cached_;
};

// A learned table `weight` (positions, C) added to the embedding output.
class LearnedPositions : public PositionImpl {
 public:
  LearnedPositions(int64_t positions, int64_t d, double std) {
    weight_ = register_parameter("weight", at::empty({positions, d}));
    init_normal(weight_, std);
  }
  at::Tensor embed(const at::Tensor& x) override {
    int64_t S = x.size(1);
    TORCH_CHECK(S <= weight_.size(0), "sequence of ", S, " positions is longer than the learned table (",
                weight_.size(0), ")");
    return x + weight_.narrow(0, 0, S).unsqueeze(0);
  }

 private:
  at::Tensor weight_;
};

class NoPositions : public PositionImpl {};

// --- Attention kernels ------------------------------------------------------------------------

// q, k, v with one extra key and value (B, G, 1, E) ahead of sequence position 0, on the fused
// causal kernel: a dummy (zero) query is prepended too, so the causal mask stays square and each
// real query sees the extra key plus its own past; the dummy's output is dropped.
at::Tensor sdpa_with_leading_key(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& k0,
                                 const at::Tensor& v0) {
  int64_t H = q.size(1), S = q.size(2);
  auto q1 = at::cat({at::zeros_like(q.narrow(2, 0, 1)), q}, 2);
  auto k1 = repeat_kv(at::cat({k0, k}, 2), H);
  auto v1 = repeat_kv(at::cat({v0, v}, 2), H);
  auto out = at::scaled_dot_product_attention(q1, k1, v1, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true);
  return out.narrow(2, 1, S);
}

// softmax(q·kᵀ/√E) with a causal mask.
class SoftmaxKernel : public AttentionKernel {
 public:
  at::Tensor fast(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const override {
    // The fused CPU path (undefined when it does not apply: grouped kv heads among others).
    if (auto out = kernels::causal_attention(q, k, v); out.defined()) return out;
    int64_t H = q.size(1);
    return at::scaled_dot_product_attention(q, repeat_kv(k, H), repeat_kv(v, H), /*attn_mask=*/{},
                                            /*dropout_p=*/0.0, /*is_causal=*/true);
  }
};

// σ(q·kᵀ/√E + b) on the causal positions, 0 elsewhere, no row normalisation.
class SigmoidKernel : public AttentionKernel {
 public:
  explicit SigmoidKernel(double bias) : bias_(bias) {}
  at::Tensor probabilities(const at::Tensor& logits, const at::Tensor& visible) const override {
    return at::sigmoid(logits + bias_).masked_fill(visible.logical_not(), 0.0);
  }
  at::Tensor fast(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const override {
    if (auto out = kernels::causal_sigmoid_attention(q, k, v, bias_); out.defined()) return out;
    return AttentionKernel::fast(q, k, v);
  }

 private:
  double bias_;
};

// softmax with +1 in the denominator: an all-zero key (logit 0) with an all-zero value after the
// sequence in the probe layout, ahead of it (dummy-query trick) on the fast path.
class Softmax1Kernel : public SoftmaxKernel {
 public:
  ExtendedKeys extend(const at::Tensor& k, const at::Tensor& v) const override {
    auto z = at::zeros_like(k.narrow(2, 0, 1));
    return {at::cat({k, z}, 2), at::cat({v, at::zeros_like(v.narrow(2, 0, 1))}, 2), 0};
  }
  at::Tensor fast(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const override {
    // One zero key/value (B, G, 1, E), an expanded view, for either path.
    auto z = at::zeros({1, 1, 1, k.size(3)}, k.options()).expand({k.size(0), k.size(1), 1, k.size(3)});
    if (auto out = kernels::causal_attention(q, k, v, z, z); out.defined()) return out;
    return sdpa_with_leading_key(q, k, v, z, z);
  }
};

// A learnable key `k_bias` (G, E), and with `with_value` a learnable value `v_bias` (G, E)
// (otherwise a zero value), prepended to every sequence; no position is applied to them.
class KeyBiasKernel : public SoftmaxKernel {
 public:
  explicit KeyBiasKernel(bool with_value) : with_value_(with_value) {}
  void build(torch::nn::Module& attn, int64_t G, int64_t E, double std) override {
    torch::NoGradGuard no_grad;
    k_bias_ = attn.register_parameter("k_bias", at::empty({G, E}));
    init_normal(k_bias_, std);
    if (with_value_) {
      v_bias_ = attn.register_parameter("v_bias", at::empty({G, E}));
      init_normal(v_bias_, std);
    }
  }
  int64_t parameters(int64_t G, int64_t E) const override { return (with_value_ ? 2 : 1) * G * E; }
  ExtendedKeys extend(const at::Tensor& k, const at::Tensor& v) const override {
    auto [k0, v0] = leading(k, v);
    return {at::cat({k0, k}, 2), at::cat({v0, v}, 2), 1};
  }
  at::Tensor fast(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const override {
    auto [k0, v0] = leading(k, v);
    if (auto out = kernels::causal_attention(q, k, v, k0, v0); out.defined()) return out;
    return sdpa_with_leading_key(q, k, v, k0, v0);
  }

 private:
  std::pair<at::Tensor, at::Tensor> leading(const at::Tensor& k, const at::Tensor& v) const {
    int64_t B = k.size(0), G = k.size(1), E = k.size(3);
    auto k0 = k_bias_.to(k.scalar_type()).view({1, G, 1, E}).expand({B, G, 1, E});
    auto v0 = with_value_ ? v_bias_.to(v.scalar_type()).view({1, G, 1, E}).expand({B, G, 1, E})
                          : at::zeros_like(v.narrow(2, 0, 1));
    return {k0, v0};
  }
  bool with_value_;
  at::Tensor k_bias_, v_bias_;
};

// Plain softmax attention; the LM prepends one learned embedding `sink_token` to every sequence.
class SinkTokenKernel : public SoftmaxKernel {
 public:
  int64_t prefix_tokens() const override { return 1; }
};

// --- Gates ------------------------------------------------------------------------------------

// σ(source · w_gateᵀ): `w_gate` (n_gate, C), source chosen by the kind.
class ProjectedGate : public GateKind {
 public:
  explicit ProjectedGate(GateSource source) : source_(source) {}
  GateSource source() const override { return source_; }
  void build(torch::nn::Module& attn, int64_t d, int64_t n_gate, double std) override {
    w_gate_ = attn.register_module("w_gate", make_linear(d, n_gate, std));
  }
  int64_t parameters(int64_t d, int64_t n_gate) const override { return d * n_gate; }
  at::Tensor gate(const at::Tensor& source) const override { return from_logits(at::linear(source, w_gate_->weight)); }
  at::Tensor projection_weight() const override { return w_gate_->weight; }

 private:
  GateSource source_;
  torch::nn::Linear w_gate_{nullptr};
};

// σ(gate_logit): one learned constant per head or channel, gate_logit initialised to 0 (gate 0.5,
// the value an input-conditioned gate starts near).
class StaticGate : public GateKind {
 public:
  void build(torch::nn::Module& attn, int64_t /*d*/, int64_t n_gate, double /*std*/) override {
    logit_ = attn.register_parameter("gate_logit", at::zeros({n_gate}));
  }
  int64_t parameters(int64_t /*d*/, int64_t n_gate) const override { return n_gate; }
  at::Tensor gate(const at::Tensor& /*source*/) const override { return at::sigmoid(logit_).view({1, 1, -1}); }

 private:
  at::Tensor logit_;
};

}  // namespace

at::Tensor AttentionKernel::probabilities(const at::Tensor& logits, const at::Tensor& visible) const {
  return logits.masked_fill(visible.logical_not(), -std::numeric_limits<double>::infinity()).softmax(-1);
}

at::Tensor AttentionKernel::fast(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const {
  return explicit_attention(*this, q, k, v).out;
}

ExplicitAttention explicit_attention(const AttentionKernel& kernel, const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v, const std::vector<int64_t>& hidden) {
  int64_t H = q.size(1), S = q.size(2), E = q.size(3);
  ExplicitAttention r;
  r.keys = kernel.extend(k, v);
  int64_t K = r.keys.k.size(2);
  auto kk = repeat_kv(r.keys.k, H), vv = repeat_kv(r.keys.v, H);
  auto logits = at::matmul(q, kk.transpose(-2, -1)) * (1.0 / std::sqrt(double(E)));  // (B, H, S, K)
  auto iopt = at::TensorOptions().dtype(at::kLong).device(q.device());
  auto seq = at::arange(K, iopt).sub(r.keys.before).view({1, K});  // key's sequence position
  auto query = at::arange(S, iopt).view({S, 1});
  auto visible = seq.lt(0).logical_or(seq.ge(S)).logical_or(seq.le(query));  // (S, K)
  for (int64_t p : hidden) visible = visible.logical_and(seq.ne(p).logical_or(query.eq(p)));
  r.probabilities = kernel.probabilities(logits, visible);
  r.out = at::matmul(r.probabilities, vv);
  return r;
}

// --- Registries -------------------------------------------------------------------------------

const Registry<NormFactory>& norm_registry() {
  static const Registry<NormFactory> r = [] {
    Registry<NormFactory> r("norm type");
    r.add("rmsnorm", {[](int64_t d, const NormOptions& o) { return std::make_shared<RmsNorm>(d, o.eps); },
                      [](int64_t d) { return d; }});
    r.add("layernorm", {[](int64_t d, const NormOptions& o) { return std::make_shared<LayerNorm>(d, o.eps); },
                        [](int64_t d) { return 2 * d; }});
    r.add("dyt", {[](int64_t d, const NormOptions& o) { return std::make_shared<DynamicTanh>(d, o.dyt_alpha); },
                  [](int64_t d) { return 2 * d + 1; }});
    return r;
  }();
  return r;
}

const Registry<PlacementRecipe>& placement_registry() {
  static const Registry<PlacementRecipe> r = [] {
    Registry<PlacementRecipe> r("norm placement");
    //                  input  output after_add final
    r.add("pre", {true, false, false, true});
    r.add("post", {false, false, true, false});
    r.add("sandwich", {true, true, false, true});
    r.add("none", {false, false, false, false});
    return r;
  }();
  return r;
}

const Registry<FfnFactory>& ffn_registry() {
  static const Registry<FfnFactory> r = [] {
    Registry<FfnFactory> r("ffn type");
    r.add("swiglu", {true,
                     [](int64_t d, int64_t h, double s, double os) { return std::make_shared<SwiGlu>(d, h, s, os); },
                     [](int64_t d, int64_t h) { return 3 * d * h; }, swiglu_hidden});
    r.add("gelu", {true,
                   [](int64_t d, int64_t h, double s, double os) { return std::make_shared<GeluMlp>(d, h, s, os); },
                   [](int64_t d, int64_t h) { return 2 * d * h; }, [](int64_t d) { return 4 * d; }});
    r.add("linear", {true,
                     [](int64_t d, int64_t, double, double os) { return std::make_shared<LinearFfn>(d, os); },
                     [](int64_t d, int64_t) { return d * d; }, [](int64_t) { return int64_t(0); }});
    r.add("none", {false, [](int64_t, int64_t, double, double) { return std::shared_ptr<FfnImpl>(); },
                   [](int64_t, int64_t) { return int64_t(0); }, [](int64_t) { return int64_t(0); }});
    return r;
  }();
  return r;
}

const Registry<PositionFactory>& position_registry() {
  static const Registry<PositionFactory> r = [] {
    Registry<PositionFactory> r("position type");
    r.add("rope", {[](const ModelOptions& o, int64_t) { return std::make_shared<Rope>(o.position.base); },
                   [](int64_t, int64_t) { return int64_t(0); }});
    r.add("learned", {[](const ModelOptions& o, int64_t n) {
                        return std::make_shared<LearnedPositions>(n, o.d_model, o.init.std);
                      },
                      [](int64_t d, int64_t n) { return d * n; }});
    r.add("none", {[](const ModelOptions&, int64_t) { return std::make_shared<NoPositions>(); },
                   [](int64_t, int64_t) { return int64_t(0); }});
    return r;
  }();
  return r;
}

const Registry<AttentionFactory>& attention_registry() {
  static const Registry<AttentionFactory> r = [] {
    Registry<AttentionFactory> r("attention variant");
    r.add("softmax", {[](const AttentionOptions&) { return std::make_unique<SoftmaxKernel>(); },
                      "fused CPU causal attention (float32, S <= 512), else scaled_dot_product_attention(is_causal)"});
    r.add("sigmoid", {[](const AttentionOptions& o) { return std::make_unique<SigmoidKernel>(o.sigmoid_bias); },
                      "fused CPU causal sigmoid attention (float32, S <= 512), else explicit: matmul, sigmoid, causal zeroing, matmul"});
    r.add("softmax1", {[](const AttentionOptions&) { return std::make_unique<Softmax1Kernel>(); },
                       "fused CPU causal attention with a leading zero key/value (float32, S <= 512), else scaled_dot_product_attention(is_causal) with a leading zero key/value and a dummy query"});
    r.add("k_bias", {[](const AttentionOptions&) { return std::make_unique<KeyBiasKernel>(false); },
                     "fused CPU causal attention with a leading learned key, zero value (float32, S <= 512), else scaled_dot_product_attention(is_causal) with them and a dummy query"});
    r.add("kv_bias", {[](const AttentionOptions&) { return std::make_unique<KeyBiasKernel>(true); },
                      "fused CPU causal attention with a leading learned key/value (float32, S <= 512), else scaled_dot_product_attention(is_causal) with them and a dummy query"});
    r.add("sink_token", {[](const AttentionOptions&) { return std::make_unique<SinkTokenKernel>(); },
                         "softmax's fast path over the sequence with its prepended sink token"});
    return r;
  }();
  return r;
}

const Registry<GateKindFactory>& gate_kind_registry() {
  static const Registry<GateKindFactory> r = [] {
    Registry<GateKindFactory> r("gate kind");
    r.add("none", {[] { return std::make_unique<GateKind>(); }});
    r.add("conditional", {[] { return std::make_unique<ProjectedGate>(GateSource::normalized_input); }});
    r.add("static", {[] { return std::make_unique<StaticGate>(); }});
    r.add("position", {[] { return std::make_unique<ProjectedGate>(GateSource::position_embedding); }});
    r.add("token", {[] { return std::make_unique<ProjectedGate>(GateSource::token_embedding); }});
    return r;
  }();
  return r;
}

const Registry<GateGranularity>& gate_granularity_registry() {
  static const Registry<GateGranularity> r = [] {
    Registry<GateGranularity> r("gate granularity");
    r.add("headwise", {[](int64_t) { return int64_t(1); }});
    r.add("elementwise", {[](int64_t e) { return e; }});
    return r;
  }();
  return r;
}

// The YAML values of each axis are exactly the registries' keys.
const std::vector<std::string>& norm_type_names() { return norm_registry().names(); }
const std::vector<std::string>& norm_placement_names() { return placement_registry().names(); }
const std::vector<std::string>& attention_variant_names() { return attention_registry().names(); }
const std::vector<std::string>& gate_kind_names() { return gate_kind_registry().names(); }
const std::vector<std::string>& gate_granularity_names() { return gate_granularity_registry().names(); }
const std::vector<std::string>& ffn_type_names() { return ffn_registry().names(); }
const std::vector<std::string>& position_type_names() { return position_registry().names(); }

}  // namespace ablate::modules
