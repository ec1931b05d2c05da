// What a forward pass can be asked to return besides the logits. Probe tensors are computed
// under no-grad and detached: asking for them never changes the logits or the gradients.
// Letters: B batch, T tokens in the input, P prepended positions (sink token: 1, else 0),
// S = P + T positions in the residual stream, K key positions (S, plus 1 for k_bias/kv_bias,
// plus 1 for softmax1's zero key), C d_model, H heads, G kv heads, E head_dim, V vocab.
#pragma once

#include <ATen/Tensor.h>

#include <string>
#include <vector>

namespace ablate::modules {

struct ProbeRequest {
  bool residual = false;   // residual stream: after the embedding and after every block
  bool norms = false;      // input and output of every norm
  bool keys = false;       // per-layer keys as used in q·k (after qk-norm and positions)
  bool attention = false;  // per-layer attention probabilities, computed explicitly
  std::vector<int64_t> attention_layers;  // restrict attention/keys to these layers; empty = all
  bool any() const { return residual || norms || keys || attention; }
};

struct NormProbe {
  std::string name;    // parameter-name prefix of the norm, e.g. "layers.0.attn_norm"
  at::Tensor input;    // (B, S, C) or (B, H, S, E) for qk-norms
  at::Tensor output;
};

struct ForwardResult {
  at::Tensor logits;  // (B, T, V): the prepended positions are dropped

  int64_t prefix = 0;  // P: positions prepended to the residual stream (sink_token)
  // residual[0] is the embedding output (B, S, C); residual[b] for b = 1..2L is the stream after
  // block b, a block being one sublayer (odd b: attention, even b: FFN).
  std::vector<at::Tensor> residual;
  std::vector<NormProbe> norms;
  // Per requested layer l (index into `probed_layers`): keys (B, G, K, E) and attention
  // probabilities (B, H, T+P, K). Key position `key_offset` is sequence position 0.
  std::vector<int64_t> probed_layers;
  std::vector<at::Tensor> keys;
  std::vector<at::Tensor> attention;
  int64_t key_offset = 0;  // 1 for k_bias / kv_bias (the learned key comes first), else 0
};

}  // namespace ablate::modules
