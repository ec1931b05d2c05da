#pragma once
// Fused CPU kernels for the hot elementwise parts of the model and the loss (docs/performance.md,
// "Fused CPU kernels"). Each function computes exactly the formula of the composite code it
// replaces (docs/model.md) with fewer passes over memory and no intermediate tensors; results
// differ from the composite ones only by floating-point rounding (tests/modules/kernels_test.cpp
// bounds the difference of values and gradients).
//
// The fused path runs when every tensor is a float32 CPU tensor and the innermost dimension is
// contiguous; anything else (CUDA, float64, other layouts) takes the composite path. Under CPU
// bf16 autocast, the norm, SwiGLU, RoPE and attention kernels first widen bf16 inputs (matrix
// products' outputs, RoPE's tables) to float32 and run in fp32, as torch autocast runs norms and
// softmax; packed_linear's one product runs in bf16 under autocast like any linear, and
// linear_masked_ce steps aside (the head's product then runs in bf16, the loss in fp32). ABLATE_FUSED_CPU=0 in the environment disables the fused path everywhere (to compare
// numerics with the composite code, or to rule the kernels out when debugging).
#include <ATen/core/Tensor.h>

#include <utility>

namespace ablate::modules::kernels {

// The dtype the kernels compute a tensor in: float32 for a bf16 CPU tensor under CPU autocast
// (they widen it), else its own (RoPE builds its tables in it).
at::ScalarType compute_dtype(const at::Tensor& t);

// Whether the fused CPU path is on (ABLATE_FUSED_CPU, read once) — tests may override it.
bool fused_cpu_enabled();
void set_fused_cpu_enabled(bool on);

// x / sqrt(mean(x², -1) + eps) · weight, x (..., C) with contiguous rows, weight (C).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// x · [W₁; W₂; …]ᵀ as one matrix product (B, S, ΣNᵢ) when the fused CPU path applies to x and
// every weight, else an undefined tensor (the caller then applies the weights one by one). One
// product of width ΣNᵢ runs faster than n narrow ones (attention's q, k, v; SwiGLU's gate and up)
// and reads x once; the weights stay separate parameters.
at::Tensor packed_linear(const at::Tensor& x, at::TensorList weights);

// silu(a) ⊙ b for gu = [a | b] packed along the last dimension (..., 2F) → (..., F); the fused
// backward writes the packed gradient [da | db] in one pass.
at::Tensor swiglu(const at::Tensor& gu);

// Rotate-half RoPE: x (B, H, S, E) with any strides but a contiguous last dimension, cos and sin
// (S, E) tables. Returns x · cos + cat(-x₂, x₁) · sin.
at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// softmax(q·kᵀ/√E, causal) · v for q, k, v (B, H, S, E) of equal shapes (no grouped kv heads), each
// with a contiguous last dimension; the result is (B, H, S, E), a transposed view of a contiguous
// (B, S, H, E). With lead_k and lead_v (B, H, 1, E) (expanded views allowed), every query also
// sees one extra key lead_k with value lead_v ahead of position 0 (softmax1: zeros; k_bias /
// kv_bias: the learned vectors). Undefined when the fused CPU path does not apply (then use
// SDPA): not float32 CPU (after widening under autocast, above), S > 512, or the kept
// probabilities (B·H·S² floats, until backward) over 64 MiB.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& lead_k = {}, const at::Tensor& lead_v = {});

// σ(q·kᵀ/√E + bias) on the causal positions (no row normalisation) · v; same layouts and
// conditions as causal_attention.
at::Tensor causal_sigmoid_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double bias);

// The masked language-model loss on a linear head: returns (Σ_t mask_t · CE(h_t · Wᵀ, y_t), Σ_t mask_t)
// for h (B, T, C), W (V, C), targets (B, T) int64, mask (B, T) float. The fused path never
// materialises the (B·T, V) logits: it walks the tokens in chunks whose logits fit in cache and,
// when a gradient is needed, computes dL/dh and dL/dW in the same pass (scaled by the incoming
// gradient in backward). Otherwise: cross entropy on at::linear(h, W) in float32.
std::pair<at::Tensor, at::Tensor> linear_masked_ce(const at::Tensor& h, const at::Tensor& weight,
                                                   const at::Tensor& targets, const at::Tensor& mask);

// The composite loss on materialised logits (B, T, V): (Σ mask · CE, Σ mask).
std::pair<at::Tensor, at::Tensor> masked_ce(const at::Tensor& logits, const at::Tensor& targets,
                                            const at::Tensor& mask);

}  // namespace ablate::modules::kernels
