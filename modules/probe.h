// What a forward pass can be asked to return besides the logits, and the interventions it can be
// asked to run. Probe tensors are computed under no-grad and detached: asking for them never
// changes the logits or the gradients. Interventions (off by default) do: they are experiments.
// Letters: B batch, T tokens in the input, P prepended positions (sink token: 1, else 0),
// S = P + T positions in the residual stream, K key positions (S, plus 1 for k_bias/kv_bias,
// plus 1 for softmax1's zero key), C d_model, H heads, G kv heads, E head_dim, V vocab.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ablate::modules {

// --- Interventions (experiments: they change the forward) -----------------------------------
// Off by default. Unlike the probe tensors below, an intervention changes the logits, the loss
// and the gradients; it is how the probe measures "set the massive activations to zero / to
// their mean" and "mask attention to the sink" (docs/metrics.md, Interventions). With no
// intervention requested the forward is exactly the plain one (same kernels, bitwise).

// Sets entries of the residual stream h_b (the stream ForwardResult::residual[b] reports: b = 0
// the embedding output incl. positions, b = 1..2L after block b) to a value, in place of what the
// block produced; later blocks read the edited stream. Entries are (stream position, channel)
// pairs, chosen per sequence by a mask. With `through_end`, the same edit is applied again after
// every later block b' > block (the entries are pinned from `block` on).
struct ResidualEdit {
  int64_t block = 1;
  bool through_end = false;
  at::Tensor mask;    // bool, broadcastable to (B, S, C): true = set this entry
  at::Tensor values;  // broadcastable to (B, S, C), any float dtype; undefined = set to zero
};

// (1, S, C) bool mask with the given (stream position, channel) entries set: for ResidualEdit.
at::Tensor residual_mask(int64_t positions, int64_t channels,
                         const std::vector<std::pair<int64_t, int64_t>>& entries);

// Which keys attention may not use, in every layer and head. A hidden key's logit is dropped
// before the variant's normalisation: softmax, softmax1, k_bias, kv_bias and sink_token
// renormalise over the remaining keys (softmax1 keeps its zero key, the "+1"); sigmoid does not
// normalise, so its A[t, key] is just 0. A query always keeps the key at its own position (query
// 0 has no other key), so hiding stream position 0 hides it from queries t >= 1.
enum class SinkMask {
  none,
  sink,            // the variant's sink: the learned key of k_bias / kv_bias (key index 0);
                   // stream position 0 for every other variant (sink_token: the sink token)
  first_position,  // stream position 0 for every variant (key index ForwardResult::key_offset)
  both,            // the learned key and stream position 0 (= first_position without one)
};

struct Intervention {
  std::vector<ResidualEdit> residual;  // applied in order; later edits win on shared entries
  SinkMask sink_mask = SinkMask::none;  // runs explicit attention in every layer
  bool any() const { return !residual.empty() || sink_mask != SinkMask::none; }
};

struct ProbeRequest {
  bool residual = false;   // residual stream: after the embedding and after every block
  bool norms = false;      // input and output of every norm
  bool keys = false;       // per-layer keys as used in q·k (after qk-norm and positions)
  bool attention = false;  // per-layer attention probabilities, computed explicitly
  std::vector<int64_t> attention_layers;  // restrict attention/keys to these layers; empty = all
  // Not an observation: changes the forward (see above). Probe tensors requested together with
  // it describe the intervened forward (the residual after an edited block holds the edit).
  Intervention intervention;
  // false: ForwardResult::logits is left undefined; the caller applies the head to `hidden`
  // (the trainer's fused loss, trainers/step.h lm_loss).
  bool logits = true;
  // Whether any probe tensor is requested (interventions are not probe tensors).
  bool any() const { return residual || norms || keys || attention; }
};

struct NormProbe {
  std::string name;    // parameter-name prefix of the norm, e.g. "layers.0.attn_norm"
  at::Tensor input;    // (B, S, C) or (B, H, S, E) for qk-norms
  at::Tensor output;
};

struct ForwardResult {
  at::Tensor logits;  // (B, T, V): the prepended positions are dropped (unless ProbeRequest::logits is false)
  at::Tensor hidden;       // (B, T, C): the input of the LM head (after the final norm, if any)
  at::Tensor head_weight;  // (V, C): lm_head.weight, or embed.weight when tied

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
