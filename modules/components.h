// The model's components and their variant registries (one registry per YAML axis). Concrete
// variants live in modules/registry.cpp, each next to its registration; this header holds the
// interfaces the block and the LM call, and the factory records the registries store.
//
// Invariants:
// * Every component initialises its own parameters in its constructor from torch's default CPU
//   generator, in construction order (normal(0, std) matrices and embeddings, gains 1, biases 0),
//   so `torch::manual_seed(s)` before building a model fixes every weight. Random draws go
//   through `init_normal`, so that `model.init.by_name` can redraw them keyed by name.
// * Each factory record carries the closed-form parameter count of what it builds; the model's
//   `parameter_count` is the sum of these terms (docs/model.md), tested against the real count.
// * Strategies that are not modules (attention kernels, gates) register their parameters on the
//   attention module that owns them, so parameter names stay flat: `layers.{i}.attn.k_bias`.
// Letters: B batch, S positions, C d_model, H heads, G kv heads, E head_dim, K key positions.
#pragma once

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "modules/options.h"
#include "modules/registry.h"

namespace ablate::modules {

// Draws `t` from normal(0, std) in place. While a model is being built, records (t, std) so that
// `model.init.by_name` can redraw it from a generator keyed by the parameter's name.
void init_normal(const at::Tensor& t, double std);

// Collects the draws of `init_normal` on this thread while alive (nests; the model's constructor
// holds one).
class InitRecorder {
 public:
  InitRecorder();
  ~InitRecorder();
  InitRecorder(const InitRecorder&) = delete;
  InitRecorder& operator=(const InitRecorder&) = delete;
  const std::vector<std::pair<at::Tensor, double>>& draws() const { return draws_; }

 private:
  std::vector<std::pair<at::Tensor, double>> draws_;
  std::vector<std::pair<at::Tensor, double>>* previous_;
};

// A bias-free linear map `in -> out` with weight ~ normal(0, std) (parameter name `weight`).
torch::nn::Linear make_linear(int64_t in, int64_t out, double std);

// --- Norms ------------------------------------------------------------------------------------

// Normalises over the last dimension; any leading shape.
class NormImpl : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;
};
struct NormFactory {
  std::function<std::shared_ptr<NormImpl>(int64_t dim, const NormOptions&)> create;
  std::function<int64_t(int64_t dim)> parameters;
};
const Registry<NormFactory>& norm_registry();

// --- Placement: where a sublayer's norms sit (Marian-style recipe) ----------------------------
// x ← x + out(f(in(x))), then x ← add(x): `in` is the norm_input norm, `out` the norm_output one,
// `add` the norm_after_add one; each absent when its flag is false. The input and after-add norm
// share the name `{sublayer}_norm` (no recipe sets both); the output norm is `{sublayer}_out_norm`.
struct PlacementRecipe {
  bool norm_input = false;      // pre, sandwich
  bool norm_output = false;     // sandwich: the sublayer's output is normalised before the add
  bool norm_after_add = false;  // post (original Transformer)
  bool final_norm = false;      // a norm before the LM head (pre, sandwich)
  int64_t norms_per_sublayer() const { return int64_t(norm_input) + norm_output + norm_after_add; }
};
const Registry<PlacementRecipe>& placement_registry();

// --- FFN --------------------------------------------------------------------------------------

// (B, S, C) -> (B, S, C).
class FfnImpl : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& x) = 0;
};
struct FfnFactory {
  bool present = true;  // false: no FFN sublayer at all (attention-only model)
  // hidden is already resolved; out_std is the std of the output projection.
  std::function<std::shared_ptr<FfnImpl>(int64_t d_model, int64_t hidden, double std, double out_std)> create;
  std::function<int64_t(int64_t d_model, int64_t hidden)> parameters;
  std::function<int64_t(int64_t d_model)> default_hidden;  // ffn.hidden == 0; 0 = no hidden layer
};
const Registry<FfnFactory>& ffn_registry();

// --- Positions --------------------------------------------------------------------------------

class PositionImpl : public torch::nn::Module {
 public:
  // Absolute information added to the embedding output x (B, S, C).
  virtual at::Tensor embed(const at::Tensor& x) { return x; }
  // Relative information applied to queries and keys (B, *, S, E), position s = index along S.
  virtual at::Tensor rotate(const at::Tensor& x) { return x; }
};
struct PositionFactory {
  // positions = max_seq_len + prefix tokens: the rows a learned table needs.
  std::function<std::shared_ptr<PositionImpl>(const ModelOptions&, int64_t positions)> create;
  std::function<int64_t(int64_t d_model, int64_t positions)> parameters;
};
const Registry<PositionFactory>& position_registry();

// --- Attention variants -----------------------------------------------------------------------

// Keys and values with a variant's extra positions: (B, G, K, E). `before` extra keys come ahead
// of sequence position 0, K - S - before come after the last one. Extra keys are visible to
// every query.
struct ExtendedKeys {
  at::Tensor k, v;
  int64_t before = 0;
};

// How a variant turns q, k, v into the attention output. Not a module: `build` registers the
// variant's parameters on the owning attention module.
class AttentionKernel {
 public:
  virtual ~AttentionKernel() = default;
  virtual void build(torch::nn::Module& /*attn*/, int64_t /*kv_heads*/, int64_t /*head_dim*/, double /*std*/) {}
  virtual int64_t parameters(int64_t /*kv_heads*/, int64_t /*head_dim*/) const { return 0; }
  // Learned embeddings the LM prepends to every sequence (sink_token: 1).
  virtual int64_t prefix_tokens() const { return 0; }
  virtual ExtendedKeys extend(const at::Tensor& k, const at::Tensor& v) const { return {k, v, 0}; }
  // logits (B, H, S, K), already scaled by 1/sqrt(E); visible (S, K) bool. Default: softmax.
  virtual at::Tensor probabilities(const at::Tensor& logits, const at::Tensor& visible) const;
  // The fast path: q (B, H, S, E), k and v (B, G, S, E) -> (B, H, S, E). Default: the explicit
  // computation (explicit_attention below).
  virtual at::Tensor fast(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) const;
};
struct AttentionFactory {
  std::function<std::unique_ptr<AttentionKernel>(const AttentionOptions&)> create;
  std::string fast_path;  // how `fast` computes, for docs and `model summary`
};
const Registry<AttentionFactory>& attention_registry();

// (B, G, ·, E) -> (B, H, ·, E) by repeating each kv head H/G times (grouped queries).
at::Tensor repeat_kv(const at::Tensor& x, int64_t heads);

// The reference computation every variant's probe path uses: out (B, H, S, E), probabilities
// (B, H, S, K) and the extended keys (B, G, K, E). `hidden`: keys no query may use besides the
// causal mask (interventions, modules/probe.h), by sequence position: 0..S-1 a stream position
// (hidden from every query except the one at that position), -1 the leading extra key (k_bias /
// kv_bias). Their logits are dropped before the kernel's normalisation.
struct ExplicitAttention {
  at::Tensor out, probabilities;
  ExtendedKeys keys;
};
ExplicitAttention explicit_attention(const AttentionKernel& kernel, const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v, const std::vector<int64_t>& hidden = {});

// --- Output gate G1 ---------------------------------------------------------------------------

enum class GateSource { none, normalized_input, token_embedding, position_embedding };

// Produces gate values in (0, 1) that multiply the attention output (B, S, H, E) before wo.
class GateKind {
 public:
  virtual ~GateKind() = default;
  virtual GateSource source() const { return GateSource::none; }
  virtual void build(torch::nn::Module& /*attn*/, int64_t /*d_model*/, int64_t /*n_gate*/, double /*std*/) {}
  virtual int64_t parameters(int64_t /*d_model*/, int64_t /*n_gate*/) const { return 0; }
  // source (B, S, C) as chosen by source() (undefined for none) -> gates (B or 1, S or 1, n_gate);
  // undefined = no gate.
  virtual at::Tensor gate(const at::Tensor& /*source*/) const { return {}; }
  // Gates that are σ(source · wᵀ) expose w (n_gate, C): when the source is the attention's input,
  // the model computes source · wᵀ in the same product as q, k, v and passes it to from_logits.
  virtual at::Tensor projection_weight() const { return {}; }
  virtual at::Tensor from_logits(const at::Tensor& logits) const { return at::sigmoid(logits); }
};
struct GateKindFactory {
  std::function<std::unique_ptr<GateKind>()> create;
};
const Registry<GateKindFactory>& gate_kind_registry();

struct GateGranularity {
  std::function<int64_t(int64_t head_dim)> per_head;  // gate values per head: 1 or E
};
const Registry<GateGranularity>& gate_granularity_registry();

}  // namespace ablate::modules
