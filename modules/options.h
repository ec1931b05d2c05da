// Options for every model component. Plain structs: no YAML, no files. Field names are the
// YAML keys under `model.` (src/config binds them); defaults here are the documented defaults.
// Variant-valued fields hold registry names (modules/registry.h lists the valid ones).
#pragma once

#include <cstdint>
#include <string>

namespace ablate::modules {

struct NormOptions {
  std::string type = "rmsnorm";   // registry: norm types (rmsnorm, layernorm, dyt)
  std::string placement = "pre";  // registry: placements (pre, post, sandwich, none)
  bool qk_norm = false;           // per-head norm of q and k before positions and q·k
  double eps = 1e-5;              // rmsnorm / layernorm epsilon
  double dyt_alpha = 0.5;         // initial α of dyt: γ·tanh(α·x)+β
};

struct GateOptions {
  std::string kind = "none";            // registry: gate kinds (none, conditional, static, position, token)
  std::string granularity = "headwise"; // registry: gate granularities (headwise, elementwise)
};

struct AttentionOptions {
  std::string variant = "softmax";  // registry: attention variants
  double sigmoid_bias = 0.0;        // b in σ(q·k/√d + b) for variant `sigmoid`
  GateOptions gate;
};

struct FfnOptions {
  std::string type = "swiglu";  // registry: ffn types (swiglu, gelu, linear, none)
  int64_t hidden = 0;           // 0 = default: 4·d_model for gelu, 8/3·d_model rounded up to 64 for swiglu
};

struct PositionOptions {
  std::string type = "rope";  // registry: position types (rope, learned, none)
  double base = 10000.0;      // RoPE base
};

struct InitOptions {
  double std = 0.02;             // normal init of every matrix and embedding
  bool scaled_residual = true;   // output projections of each sublayer use std / sqrt(2·n_layers)
  // Each random parameter is drawn from a generator keyed by (seed, parameter name) instead of
  // one stream in construction order, so variants that share a parameter's name and shape start
  // from identical values (matched ablations: sweep `init_from_seed: true`).
  bool by_name = false;
};

struct ModelOptions {
  int64_t d_model = 128;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t n_kv_heads = 0;   // 0 = n_heads (no grouped queries)
  int64_t head_dim = 32;    // independent of d_model
  int64_t vocab = 256;
  int64_t max_seq_len = 0;  // 0 = data.seq_len (filled in by the config layer)
  bool tie_embeddings = false;
  NormOptions norm;
  AttentionOptions attention;
  FfnOptions ffn;
  PositionOptions position;
  InitOptions init;
};

}  // namespace ablate::modules
