// The decoder-only language model: embedding → (sink prefix) → positions → L layers, each an
// attention block and an FFN block wrapped in the norm placement recipe → final norm → LM head.
// docs/model.md documents every formula, parameter name and the closed-form parameter count.
//
// Invariants:
// * Parameter names are stable (checkpoints, weight comparisons and exports depend on them):
//   embed.weight, sink_token, pos_embed.weight, gate_pos_embed.weight, layers.{i}.attn_norm.*,
//   layers.{i}.attn.{wq,wk,wv,wo}.weight, layers.{i}.attn.{q_norm,k_norm}.*, attn.k_bias,
//   attn.v_bias, attn.w_gate.weight, attn.gate_logit, layers.{i}.attn_out_norm.*,
//   layers.{i}.ffn_norm.*, layers.{i}.ffn.{w_gate,w_up,w_down,w}.weight, layers.{i}.ffn_out_norm.*,
//   final_norm.*, lm_head.weight (absent when tied).
// * forward never keeps state between calls; probe tensors are detached (probe.h) and asking for
//   them never changes the logits. Only an explicit ProbeRequest::intervention changes them.
// * Initialisation draws from torch's default CPU generator in construction order.
#pragma once

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "modules/components.h"
#include "modules/options.h"
#include "modules/probe.h"

namespace ablate::modules {

// Per-forward inputs a layer needs besides the residual stream.
struct LayerContext {
  PositionImpl* position = nullptr;  // rotates q and k
  at::Tensor token_embedding;        // (B, S, C): gate source of kind token
  at::Tensor gate_position;          // (1, S, C): gate source of kind position
};

// Where a layer records probes and finds the interventions to run; null on the fast path (no
// probe tensor and no intervention requested).
struct LayerProbe {
  const ProbeRequest* request = nullptr;
  ForwardResult* result = nullptr;
  std::string prefix;          // "layers.{i}"
  int64_t layer = 0;           // i: the layer's blocks are 2i+1 (attention) and 2i+2 (FFN)
  bool explicit_attention = false;  // this layer's keys/attention are requested
  void norm(const std::string& name, const at::Tensor& in, const at::Tensor& out) const;
};

// Multi-head attention with grouped queries, optional QK-norm, a variant kernel and gate G1.
// Input: the sublayer's (normalised) input x (B, S, C); output (B, S, C).
class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const ModelOptions& options);
  at::Tensor forward(const at::Tensor& x, const LayerContext& ctx, const LayerProbe* probe = nullptr);
  const AttentionKernel& kernel() const { return *kernel_; }
  const GateKind& gate() const { return *gate_; }

 private:
  int64_t heads_, kv_heads_, head_dim_, gate_per_head_;
  torch::nn::Linear wq_{nullptr}, wk_{nullptr}, wv_{nullptr}, wo_{nullptr};
  std::shared_ptr<NormImpl> q_norm_, k_norm_;  // null without qk_norm
  std::unique_ptr<AttentionKernel> kernel_;
  std::unique_ptr<GateKind> gate_;
};
TORCH_MODULE(Attention);

// One layer: the attention block and the FFN block, each wrapped in the placement recipe.
class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const ModelOptions& options);
  // Applies the residual edits of probe->request->intervention after each of its two blocks, then
  // appends the (edited) residual to probe->result when requested.
  at::Tensor forward(const at::Tensor& x, const LayerContext& ctx, const LayerProbe* probe = nullptr);

 private:
  template <class F>
  at::Tensor sublayer(const at::Tensor& x, const std::string& name, const std::shared_ptr<NormImpl>& norm,
                      const std::shared_ptr<NormImpl>& out_norm, const LayerProbe* probe, F&& f);
  PlacementRecipe recipe_;
  std::shared_ptr<NormImpl> attn_norm_, attn_out_norm_, ffn_norm_, ffn_out_norm_;
  Attention attn_{nullptr};
  std::shared_ptr<FfnImpl> ffn_;  // null for ffn type none
};
TORCH_MODULE(Block);

class LanguageModelImpl : public torch::nn::Module {
 public:
  explicit LanguageModelImpl(const ModelOptions& options);  // options.max_seq_len > 0
  // tokens (B, T) int64, T ≤ max_seq_len. probe.intervention (off by default) changes the forward;
  // see modules/probe.h.
  ForwardResult forward(const at::Tensor& tokens, const ProbeRequest& probe = {});
  const ModelOptions& options() const { return options_; }
  // AdamW weight-decay split: matrices and embeddings (≥ 2-D, not a `*_bias`) decay; norm gains and
  // biases, DyT alpha, static gate logits and the learned k/v biases do not.
  static bool decays(const std::string& parameter_name, const at::Tensor& p);

 private:
  void redraw_by_name(uint64_t seed, const std::vector<std::pair<at::Tensor, double>>& draws);
  ModelOptions options_;
  int64_t prefix_ = 0;
  PlacementRecipe recipe_;
  torch::nn::Embedding embed_{nullptr};
  at::Tensor sink_token_;  // (P, C), only with a prefix
  std::shared_ptr<PositionImpl> position_;
  torch::nn::Embedding gate_pos_embed_{nullptr};
  torch::nn::ModuleList layers_{nullptr};
  std::shared_ptr<NormImpl> final_norm_;
  torch::nn::Linear lm_head_{nullptr};
};
TORCH_MODULE(LanguageModel);

int64_t effective_ffn_hidden(const ModelOptions& o);  // resolves ffn.hidden == 0
int64_t effective_kv_heads(const ModelOptions& o);    // resolves n_kv_heads == 0
int64_t prefix_tokens(const ModelOptions& o);         // P: 1 for sink_token, else 0
// Closed form (docs/model.md), equal to the real count of LanguageModel(o) for every variant.
int64_t parameter_count(const ModelOptions& o);
// The layer table of `ablate model summary`: variants, every parameter of the model with its
// shape (layers 1.. folded onto layer 0), and the totals.
std::string model_summary(const ModelOptions& o);

}  // namespace ablate::modules
