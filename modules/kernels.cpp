// Fused CPU kernels (modules/kernels.h). Each is an autograd Function whose forward and backward
// are a few hand-written loops over rows, parallelised with at::parallel_for and compiled for
// AVX-512, AVX2 and baseline x86-64 (the best one is picked at load time: target_clones). The
// file is compiled with -fopenmp (reductions vectorise; at::parallel_for's pragma is live: without
// it every loop ran on one thread) and -ffp-contract=off (no fused
// multiply-add contraction: RoPE then rounds exactly as the composite code does).
#include "modules/kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ABLATE_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ABLATE_MULTIVERSION
#endif

namespace ablate::modules::kernels {

using torch::autograd::AutogradContext;
using torch::autograd::Variable;
using torch::autograd::variable_list;

namespace {
bool autocast_on() { return at::autocast::is_autocast_enabled(at::kCPU); }
}  // namespace

at::ScalarType compute_dtype(const at::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == at::kBFloat16 && autocast_on() ? at::kFloat : t.scalar_type();
}

namespace {

std::atomic<int> fused_state{-1};  // -1: not read yet

bool plain_cpu_float(const at::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() >= 1 && t.stride(-1) == 1;
}

// Under CPU autocast with the fused path on, a bf16 CPU tensor (a matrix product's output) as
// float32, so that the fused fp32 kernels take it (norms, activations, RoPE and attention then run
// in fp32, like torch autocast's fp32 ops); anything else unchanged (with the fused path off, the
// composite code sees the bf16 tensor). The cast is recorded by autograd.
at::Tensor widen(const at::Tensor& t) {
  return t.defined() && fused_cpu_enabled() && compute_dtype(t) != t.scalar_type() ? t.to(at::kFloat) : t;
}

// Rows [begin, end) of a (rows, C) contiguous block.
ABLATE_MULTIVERSION void rms_forward_rows(const float* x, const float* w, float* y, float* rstd, int64_t begin,
                                          int64_t end, int64_t C, float eps) {
  for (int64_t r = begin; r < end; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < C; ++c) ss += xr[c] * xr[c];
    const float rs = 1.f / std::sqrt(ss / float(C) + eps);
    rstd[r] = rs;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * rs * w[c];
  }
}

// dx = rstd · g⊙w − x · rstd³ · mean(g⊙w⊙x); dw += g⊙x·rstd (into this thread's partial row).
ABLATE_MULTIVERSION void rms_backward_rows(const float* x, const float* w, const float* g, const float* rstd,
                                           float* gx, float* gw, int64_t begin, int64_t end, int64_t C) {
  for (int64_t r = begin; r < end; ++r) {
    const float* xr = x + r * C;
    const float* gr = g + r * C;
    float* gxr = gx + r * C;
    const float rs = rstd[r];
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t c = 0; c < C; ++c) dot += gr[c] * w[c] * xr[c];
    const float k = dot * rs * rs * rs / float(C);
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      gxr[c] = gr[c] * w[c] * rs - xr[c] * k;
      gw[c] += gr[c] * xr[c] * rs;
    }
  }
}

// exp(x) in plain arithmetic that inlines and vectorises under omp simd (glibc's vector expf
// is only declared with -ffast-math): x clamped to ±87 (a NaN stays NaN), x = n·ln2 + r with
// |r| <= ln2/2 (n rounded by the 1.5·2²³ trick, no library call), exp(r) by its degree-6 Taylor
// polynomial (truncation < 1.3e-7 relative), 2ⁿ built in the exponent bits. SwiGLU through it
// stays within 4 ulp of LibTorch's silu (tests/modules/test_kernels.cpp).
inline float exp_approx(float x) {
  x = x < -87.f ? -87.f : (x > 87.f ? 87.f : x);
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;  // ln2 split hi + lo
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  // No address-taken local (memcpy): under omp simd it becomes a per-lane array and the loop
  // stays scalar.
  return p * __builtin_bit_cast(float, (static_cast<int32_t>(n) + 127) << 23);
}

inline float sigmoid_approx(float a) { return 1.f / (1.f + exp_approx(-a)); }

// Rows [begin, end) of gu = [a | b] (rows of 2F): y = silu(a) · b = a · σ(a) · b, σ computed here.
ABLATE_MULTIVERSION void swiglu_forward_rows(const float* gu, float* y, int64_t begin, int64_t end, int64_t F) {
  for (int64_t r = begin; r < end; ++r) {
    const float *a = gu + r * 2 * F, *b = a + F;
    float* yr = y + r * F;
#pragma omp simd
    for (int64_t i = 0; i < F; ++i) yr[i] = a[i] * sigmoid_approx(a[i]) * b[i];
  }
}

// d silu(a)/da = σ · (1 + a · (1 − σ)), σ recomputed; the gradient is written packed, [da | db].
ABLATE_MULTIVERSION void swiglu_backward_rows(const float* gu, const float* g, float* dgu, int64_t begin, int64_t end,
                                              int64_t F) {
  for (int64_t r = begin; r < end; ++r) {
    const float *a = gu + r * 2 * F, *b = a + F, *gr = g + r * F;
    float *da = dgu + r * 2 * F, *db = da + F;
#pragma omp simd
    for (int64_t i = 0; i < F; ++i) {
      const float sg = sigmoid_approx(a[i]);
      da[i] = gr[i] * b[i] * (sg * (1.f + a[i] * (1.f - sg)));
      db[i] = gr[i] * (a[i] * sg);
    }
  }
}

// Cross entropy on rows [begin, end) of a logits chunk z (rows of V), in place: loss[r] =
// (logsumexp(z_r) − z_r[y_r]) · mask_r and, with grad, z_r becomes its gradient
// (softmax(z_r) − onehot(y_r)) · mask_r. Two passes over each row (max; then Σ exp), one more
// for the gradient.
ABLATE_MULTIVERSION void ce_rows(float* z, const int64_t* y, const float* mask, float* loss, int64_t begin,
                                 int64_t end, int64_t V, bool grad) {
  for (int64_t r = begin; r < end; ++r) {
    float* zr = z + r * V;
    float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t v = 0; v < V; ++v) m = zr[v] > m ? zr[v] : m;
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t v = 0; v < V; ++v) sum += exp_approx(zr[v] - m);
    const float lse = m + std::log(sum), mk = mask[r];
    loss[r] = (lse - zr[y[r]]) * mk;
    if (!grad) continue;
#pragma omp simd
    for (int64_t v = 0; v < V; ++v) zr[v] = exp_approx(zr[v] - lse) * mk;
    zr[y[r]] -= mk;
  }
}

// One row of E = 2·half: y₁ = x₁·c₁ − x₂·s₁, y₂ = x₂·c₂ + x₁·s₂ (forward, sign = 1); the
// transpose for the gradient: g₁·c₁ + g₂·s₂, g₂·c₂ − g₁·s₁ (sign = −1 swaps the roles).
ABLATE_MULTIVERSION void rope_row(const float* x, const float* c, const float* s, float* y, int64_t half,
                                  bool forward) {
  if (forward) {
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) {
      y[i] = x[i] * c[i] + (-x[i + half]) * s[i];
      y[i + half] = x[i + half] * c[i + half] + x[i] * s[i + half];
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) {
      y[i] = x[i] * c[i] + x[i + half] * s[i + half];
      y[i + half] = x[i + half] * c[i + half] - x[i] * s[i];
    }
  }
}

// Applies rope_row to every (b, h, s) row of a 4-d tensor with a contiguous last dimension.
void rope_apply(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& y, bool forward) {
  const int64_t B = x.size(0), H = x.size(1), S = x.size(2), E = x.size(3);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  const auto xs = x.strides(), ys = y.strides();
  at::parallel_for(0, B * H * S, 256, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / (H * S), h = (r / S) % H, s = r % S;
      rope_row(xp + b * xs[0] + h * xs[1] + s * xs[2], cp + s * E, sp + s * E, yp + b * ys[0] + h * ys[1] + s * ys[2],
               E / 2, forward);
    }
  });
}

// --- autograd Functions ------------------------------------------------------------------------

struct RmsNormFn : torch::autograd::Function<RmsNormFn> {
  static Variable forward(AutogradContext* ctx, const Variable& x, const Variable& w, double eps) {
    const int64_t C = x.size(-1), rows = x.numel() / C;
    auto y = at::empty_like(x, at::MemoryFormat::Contiguous);
    auto rstd = at::empty({rows}, x.options());
    const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
    float *yp = y.data_ptr<float>(), *rp = rstd.data_ptr<float>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / C), [&](int64_t b, int64_t e) {
      rms_forward_rows(xp, wp, yp, rp, b, e, C, float(eps));
    });
    ctx->save_for_backward({x, w, rstd});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1], &rstd = saved[2];
    auto g = grads[0].contiguous();
    const int64_t C = x.size(-1), rows = x.numel() / C;
    auto gx = at::empty_like(x, at::MemoryFormat::Contiguous);
    auto partial = at::zeros({at::get_num_threads(), C}, w.options());
    const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>(), *gp = g.data_ptr<float>(),
                *rp = rstd.data_ptr<float>();
    float *gxp = gx.data_ptr<float>(), *pp = partial.data_ptr<float>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / C), [&](int64_t b, int64_t e) {
      rms_backward_rows(xp, wp, gp, rp, gxp, pp + at::get_thread_num() * C, b, e, C);
    });
    return {gx, partial.sum(0), Variable()};
  }
};

struct SwiGluFn : torch::autograd::Function<SwiGluFn> {
  static Variable forward(AutogradContext* ctx, const Variable& gu) {
    const int64_t F = gu.size(-1) / 2, rows = gu.numel() / (2 * F);
    auto sizes = gu.sizes().vec();
    sizes.back() = F;
    auto y = at::empty(sizes, gu.options());
    const float* gp = gu.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 8192 / F),
                     [&](int64_t b, int64_t e) { swiglu_forward_rows(gp, yp, b, e, F); });
    ctx->save_for_backward({gu});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& gu = saved[0];
    auto g = grads[0].contiguous();
    const int64_t F = gu.size(-1) / 2, rows = gu.numel() / (2 * F);
    auto dgu = at::empty_like(gu);
    const float *gp = gu.data_ptr<float>(), *dp = g.data_ptr<float>();
    float* op = dgu.data_ptr<float>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 8192 / F),
                     [&](int64_t b, int64_t e) { swiglu_backward_rows(gp, dp, op, b, e, F); });
    return {dgu};
  }
};

struct RopeFn : torch::autograd::Function<RopeFn> {
  static Variable forward(AutogradContext* ctx, const Variable& x, const at::Tensor& cos, const at::Tensor& sin) {
    auto y = at::empty_like(x);  // same (permuted) layout as x
    rope_apply(x, cos, sin, y, /*forward=*/true);
    ctx->save_for_backward({cos, sin});
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto g = grads[0];
    if (g.stride(-1) != 1) g = g.contiguous();
    auto gx = at::empty_like(g);
    rope_apply(g, saved[0], saved[1], gx, /*forward=*/false);
    return {gx, Variable(), Variable()};
  }
};

// --- Causal softmax attention ------------------------------------------------------------------
//
// softmax(q·kᵀ·scale, causal) · v for one (batch, head) at a time, with MKL's sgemm on row tiles of
// the queries: tile t (rows r0..r0+m) only meets keys 0..r0+m, so the products skip the masked
// upper triangle block by block (S 256, tiles of 64: 10/16 of the full products). The
// probabilities P are kept until backward (B·H·S² floats: 8 MiB a layer at the small bench
// config, +35 MiB of peak memory there, docs/performance.md), so backward is four products per tile and no
// recomputation; LibTorch's CPU flash attention keeps only the row log-sum-exp and recomputes P
// (seven products in all instead of six). Used at S <= kAttnMaxSeq while P fits kAttnMaxSaved;
// longer sequences take SDPA, whose memory does not grow with S².

// MKL's Fortran sgemm, exported by the PyTorch wheel's libtorch_cpu. Weak: a LibTorch without it
// still links, and causal_attention then returns undefined (the caller's SDPA runs instead).
extern "C" void sgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const float* alpha,
                       const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
                       const int* ldc) __attribute__((weak));

constexpr int64_t kAttnTile = 64;
constexpr int64_t kAttnMaxSeq = 512;
constexpr int64_t kAttnMaxSaved = int64_t{64} << 20;  // bytes of P per call (layer)

// Row-major C (m×n, ldc) = alpha · op(A) · op(B) + beta · C, op(A) m×k, op(B) k×n; as the
// column-major product Cᵀ = op(B)ᵀ · op(A)ᵀ.
void gemm_rm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
             const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const int mi = int(m), ni = int(n), ki = int(k), la = int(lda), lb = int(ldb), lc = int(ldc);
  const char tA = ta ? 'T' : 'N', tB = tb ? 'T' : 'N';
  sgemm_(&tB, &tA, &ni, &mi, &ki, &alpha, b, &lb, a, &la, &beta, c, &lc);
}

// One query row r of a tile: the scaled logits of keys 0..n-1 (keys after r are masked) become
// probabilities. Softmax: over keys 0..r and, with `lead`, the extra leading key's logit *lead,
// whose probability is returned (0 without one). Sigmoid: σ(z + bias) on keys 0..r.
ABLATE_MULTIVERSION float softmax_causal_row(float* z, int64_t r, int64_t n, const float* lead) {
  float mx = lead ? *lead : -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j <= r; ++j) mx = z[j] > mx ? z[j] : mx;  // vectorises; std::max did not
  const float e0 = lead ? exp_approx(*lead - mx) : 0.f;
  float sum = e0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j <= r; ++j) {
    z[j] = exp_approx(z[j] - mx);
    sum += z[j];
  }
  const float inv = 1.f / sum;
#pragma omp simd
  for (int64_t j = 0; j <= r; ++j) z[j] *= inv;
  if (r + 1 < n) std::memset(z + r + 1, 0, sizeof(float) * size_t(n - r - 1));
  return e0 * inv;
}

ABLATE_MULTIVERSION void sigmoid_causal_row(float* z, int64_t r, int64_t n, float bias) {
#pragma omp simd
  for (int64_t j = 0; j <= r; ++j) z[j] = sigmoid_approx(z[j] + bias);
  if (r + 1 < n) std::memset(z + r + 1, 0, sizeof(float) * size_t(n - r - 1));
}

// The gradient of the logits in place of dP. Softmax: dS = P ⊙ (dP − D_r) (P is 0 on the masked
// keys, so dS is too). Sigmoid: dS = dP ⊙ P(1 − P).
ABLATE_MULTIVERSION void softmax_backward_row(const float* p, float* dp, float d, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) dp[j] = p[j] * (dp[j] - d);
}

ABLATE_MULTIVERSION void sigmoid_backward_row(const float* p, float* dp, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) dp[j] = dp[j] * p[j] * (1.f - p[j]);
}

ABLATE_MULTIVERSION float dot_row(const float* a, const float* b, int64_t E) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t e = 0; e < E; ++e) s += a[e] * b[e];
  return s;
}

// y += a · x over E elements.
ABLATE_MULTIVERSION void axpy_row(float a, const float* x, float* y, int64_t E) {
#pragma omp simd
  for (int64_t e = 0; e < E; ++e) y[e] += a * x[e];
}

// Pointer to row 0 of (batch b, head h) of a (B, H, S, E) tensor with stride(3) == 1.
inline float* head_rows(const at::Tensor& t, int64_t b, int64_t h) {
  return t.data_ptr<float>() + b * t.stride(0) + h * t.stride(1);
}

struct CausalAttentionFn : torch::autograd::Function<CausalAttentionFn> {
  // q, k, v (B, H, S, E) with stride(3) == 1 and stride(2) >= E; lead_k, lead_v (B, H, 1, E)
  // (any strides but the last, expanded views included) or both empty (autograd takes no
  // undefined inputs); sigmoid: the rows are
  // σ(logit + bias) instead of a softmax (no leading key then). Returns (B, H, S, E) as a
  // transposed view of a contiguous (B, S, H, E) tensor (the layout the output projection reads).
  static Variable forward(AutogradContext* ctx, const Variable& q, const Variable& k, const Variable& v,
                          const Variable& lead_k, const Variable& lead_v, double scale, bool sigmoid, double bias) {
    const int64_t B = q.size(0), H = q.size(1), S = q.size(2), E = q.size(3);
    const bool lead = lead_k.numel() > 0;
    auto out = at::empty({B, S, H, E}, q.options()).transpose(1, 2);
    auto p = at::empty({B, H, S, S}, q.options());
    auto p0 = at::empty({lead ? B * H * S : 0}, q.options());
    const int64_t qs = q.stride(2), ks = k.stride(2), vs = v.stride(2), os = out.stride(2);
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / H, h = i % H;
        const float *qp = head_rows(q, b, h), *kp = head_rows(k, b, h), *vp = head_rows(v, b, h);
        const float* k0 = lead ? head_rows(lead_k, b, h) : nullptr;
        const float* v0 = lead ? head_rows(lead_v, b, h) : nullptr;
        float* p0p = lead ? p0.data_ptr<float>() + i * S : nullptr;
        float* op = head_rows(out, b, h);
        float* pp = head_rows(p, b, h);
        for (int64_t r0 = 0; r0 < S; r0 += kAttnTile) {
          const int64_t m = std::min(kAttnTile, S - r0), n = r0 + m;
          float* pt = pp + r0 * S;
          gemm_rm(false, true, m, n, E, float(scale), qp + r0 * qs, qs, kp, ks, 0.f, pt, S);
          for (int64_t r = 0; r < m; ++r) {
            if (sigmoid) {
              sigmoid_causal_row(pt + r * S, r0 + r, n, float(bias));
            } else if (lead) {
              const float l0 = float(scale) * dot_row(qp + (r0 + r) * qs, k0, E);
              p0p[r0 + r] = softmax_causal_row(pt + r * S, r0 + r, n, &l0);
            } else {
              softmax_causal_row(pt + r * S, r0 + r, n, nullptr);
            }
          }
          gemm_rm(false, false, m, E, n, 1.f, pt, S, vp, vs, 0.f, op + r0 * os, os);
          if (lead)
            for (int64_t r = r0; r < n; ++r) axpy_row(p0p[r], v0, op + r * os, E);
        }
      }
    });
    ctx->save_for_backward({q, k, v, out, p, p0, lead_k, lead_v});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["sigmoid"] = sigmoid;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &p = saved[4], &p0 = saved[5],
               &lead_k = saved[6], &lead_v = saved[7];
    const float scale = float(ctx->saved_data["scale"].toDouble());
    const bool sigmoid = ctx->saved_data["sigmoid"].toBool(), lead = lead_k.numel() > 0;
    const int64_t B = q.size(0), H = q.size(1), S = q.size(2), E = q.size(3);
    // sgemm needs rows of at least E floats apart: a gradient broadcast along the sequence (a
    // downstream sum over positions: row stride 0) is made contiguous first.
    auto g = grads[0];
    if (g.stride(-1) != 1 || g.stride(2) < E || g.stride(2) > std::numeric_limits<int>::max()) g = g.contiguous();
    auto layout = [&] { return at::empty({B, S, H, E}, q.options()).transpose(1, 2); };
    auto dq = layout(), dk = layout(), dv = layout();
    at::Tensor dk0, dv0;
    if (lead) {
      dk0 = at::zeros({B, H, 1, E}, q.options());
      dv0 = at::zeros({B, H, 1, E}, q.options());
    }
    const int64_t threads = at::get_num_threads();
    auto scratch = at::empty({threads, kAttnTile * S + S}, q.options());
    const int64_t qs = q.stride(2), ks = k.stride(2), vs = v.stride(2), os = out.stride(2), gs = g.stride(2),
                  ds = dq.stride(2);
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      float* dp = scratch.data_ptr<float>() + at::get_thread_num() * (kAttnTile * S + S);
      float* drow = dp + kAttnTile * S;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / H, h = i % H;
        const float *qp = head_rows(q, b, h), *kp = head_rows(k, b, h), *vp = head_rows(v, b, h);
        const float *op = head_rows(out, b, h), *gp = head_rows(g, b, h), *pp = head_rows(p, b, h);
        float *dqp = head_rows(dq, b, h), *dkp = head_rows(dk, b, h), *dvp = head_rows(dv, b, h);
        const float* k0 = lead ? head_rows(lead_k, b, h) : nullptr;
        const float* v0 = lead ? head_rows(lead_v, b, h) : nullptr;
        const float* p0p = lead ? p0.data_ptr<float>() + i * S : nullptr;
        float* dk0p = lead ? head_rows(dk0, b, h) : nullptr;
        float* dv0p = lead ? head_rows(dv0, b, h) : nullptr;
        if (!sigmoid)
          for (int64_t r = 0; r < S; ++r) drow[r] = dot_row(gp + r * gs, op + r * os, E);
        // Last tile first: it meets every key (n == S), so it writes dK and dV (beta 0); the others add.
        for (int64_t r0 = ((S - 1) / kAttnTile) * kAttnTile; r0 >= 0; r0 -= kAttnTile) {
          const int64_t m = std::min(kAttnTile, S - r0), n = r0 + m;
          const float* pt = pp + r0 * S;
          const float* gt = gp + r0 * gs;
          gemm_rm(false, true, m, n, E, 1.f, gt, gs, vp, vs, 0.f, dp, S);
          for (int64_t r = 0; r < m; ++r) {
            if (sigmoid) sigmoid_backward_row(pt + r * S, dp + r * S, n);
            else softmax_backward_row(pt + r * S, dp + r * S, drow[r0 + r], n);
          }
          gemm_rm(false, false, m, E, n, scale, dp, S, kp, ks, 0.f, dqp + r0 * ds, ds);
          if (lead)
            for (int64_t r = r0; r < n; ++r) {
              // The leading key: dS0 = p0 · (dO·v0 − D_r); it adds to dq and collects dk0, dv0.
              const float ds0 = p0p[r] * (dot_row(gp + r * gs, v0, E) - drow[r]);
              axpy_row(scale * ds0, k0, dqp + r * ds, E);
              axpy_row(scale * ds0, qp + r * qs, dk0p, E);
              axpy_row(p0p[r], gp + r * gs, dv0p, E);
            }
          const float beta = n == S ? 0.f : 1.f;
          gemm_rm(true, false, n, E, m, scale, dp, S, qp + r0 * qs, qs, beta, dkp, ds);
          gemm_rm(true, false, n, E, m, 1.f, pt, S, gt, gs, beta, dvp, ds);
        }
      }
    });
    return {dq, dk, dv, dk0, dv0, Variable(), Variable(), Variable()};
  }
};

// Rows per chunk so that one chunk's logits take about 4 MiB: 256 rows at V = 4096. Smaller
// chunks re-pack the whole weight for every product (1 MiB: 9 ms more matmul time per step on
// the small config); larger ones gain nothing (docs/performance.md).
int64_t ce_chunk_rows(int64_t N, int64_t V) { return std::min<int64_t>(N, std::max<int64_t>(16, (1 << 20) / V)); }

struct LinearCeFn : torch::autograd::Function<LinearCeFn> {
  // h (N, C) contiguous, w (V, C) contiguous, targets (N) int64 contiguous, mask (N) float
  // contiguous. The logits of one chunk live in one reused buffer; with need_grad the chunk's
  // gradient replaces them there and goes straight into dL/dh and dL/dw.
  static Variable forward(AutogradContext* ctx, const Variable& h, const Variable& w, const at::Tensor& targets,
                          const at::Tensor& mask, bool need_grad) {
    const int64_t N = h.size(0), V = w.size(0), R = ce_chunk_rows(N, V);
    auto buf = at::empty({R, V}, h.options());
    auto loss = at::empty({N}, h.options());
    at::Tensor dh, dw;
    if (need_grad) {
      dh = at::empty_like(h);
      dw = at::empty_like(w);
    }
    const auto wt = w.t();
    const int64_t* yp = targets.data_ptr<int64_t>();
    const float* mp = mask.data_ptr<float>();
    float* lp = loss.data_ptr<float>();
    for (int64_t r0 = 0; r0 < N; r0 += R) {
      const int64_t n = std::min(R, N - r0);
      auto hc = h.narrow(0, r0, n);
      auto z = buf.narrow(0, 0, n);
      at::mm_out(z, hc, wt);
      float* zp = z.data_ptr<float>();
      at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
        ce_rows(zp, yp + r0, mp + r0, lp + r0, b, e, V, need_grad);
      });
      if (!need_grad) continue;
      auto dhc = dh.narrow(0, r0, n);
      at::mm_out(dhc, z, w);
      if (r0 == 0) at::mm_out(dw, z.t(), hc);
      else dw.addmm_(z.t(), hc);
    }
    if (need_grad) ctx->save_for_backward({dh, dw});
    return loss.sum();
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    TORCH_CHECK(saved.size() == 2, "linear_masked_ce: backward through a forward run without gradients");
    const auto& g = grads[0];
    return {saved[0] * g, saved[1] * g, Variable(), Variable(), Variable()};
  }
};

}  // namespace

bool fused_cpu_enabled() {
  int s = fused_state.load();
  if (s < 0) {
    const char* v = std::getenv("ABLATE_FUSED_CPU");
    s = (v && std::strcmp(v, "0") == 0) ? 0 : 1;
    fused_state.store(s);
  }
  return s == 1;
}

void set_fused_cpu_enabled(bool on) { fused_state.store(on ? 1 : 0); }

at::Tensor rms_norm(const at::Tensor& x_in, const at::Tensor& weight, double eps) {
  const at::Tensor x = widen(x_in);
  if (fused_cpu_enabled() && plain_cpu_float(x) && x.is_contiguous() && plain_cpu_float(weight) &&
      weight.dim() == 1 && weight.size(0) == x.size(-1) && x.numel() > 0)
    return RmsNormFn::apply(x, weight, eps);
  return x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps) * weight;
}

at::Tensor packed_linear(const at::Tensor& x, at::TensorList weights) {
  if (!fused_cpu_enabled() || !plain_cpu_float(x) || weights.empty()) return {};
  for (const auto& w : weights)
    if (!plain_cpu_float(w) || w.dim() != 2 || w.size(1) != x.size(-1)) return {};
  return at::linear(x, at::cat(weights, 0));
}

at::Tensor swiglu(const at::Tensor& gu_in) {
  const at::Tensor gu = widen(gu_in);
  const int64_t F = gu.size(-1) / 2;
  if (fused_cpu_enabled() && plain_cpu_float(gu) && gu.is_contiguous() && gu.size(-1) % 2 == 0 &&
      gu.numel() > 0)
    return SwiGluFn::apply(gu);
  return at::silu(gu.narrow(-1, 0, F)) * gu.narrow(-1, F, F);
}

at::Tensor rope(const at::Tensor& x_in, const at::Tensor& cos_in, const at::Tensor& sin_in) {
  const at::Tensor x = widen(x_in), cos = widen(cos_in), sin = widen(sin_in);
  const int64_t E = x.size(-1);
  if (fused_cpu_enabled() && x.dim() == 4 && plain_cpu_float(x) && E % 2 == 0 &&
      plain_cpu_float(cos) && plain_cpu_float(sin) && cos.is_contiguous() && sin.is_contiguous() &&
      cos.dim() == 2 && cos.size(0) == x.size(2) && cos.size(1) == E && sin.sizes() == cos.sizes() && x.numel() > 0)
    return RopeFn::apply(x, cos, sin);
  auto x1 = x.narrow(-1, 0, E / 2), x2 = x.narrow(-1, E / 2, E / 2);
  return x * cos + at::cat({-x2, x1}, -1) * sin;
}

namespace {
// Whether the fused attention applies to tensors of these shapes and layouts (see kernels.h),
// whatever their dtype: checked before widening under autocast, so that nothing is copied for a
// call that then takes SDPA.
bool attention_shape_ok(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (!fused_cpu_enabled() || sgemm_ == nullptr) return false;
  for (const auto* t : {&q, &k, &v})
    if (!t->defined() || !t->device().is_cpu() || t->dim() != 4 || t->sizes() != q.sizes() || t->stride(3) != 1 ||
        t->stride(2) < t->size(3) || t->stride(2) > std::numeric_limits<int>::max())
      return false;
  const int64_t B = q.size(0), H = q.size(1), S = q.size(2);
  return q.numel() > 0 && S <= kAttnMaxSeq && B * H * S * S * int64_t(sizeof(float)) <= kAttnMaxSaved;
}

// The same, and every tensor float32 (after widening).
bool attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return attention_shape_ok(q, k, v) && plain_cpu_float(q) && plain_cpu_float(k) && plain_cpu_float(v);
}
}  // namespace

at::Tensor causal_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                            const at::Tensor& lead_k_in, const at::Tensor& lead_v_in) {
  if (!attention_shape_ok(q_in, k_in, v_in)) return {};
  const bool lead = lead_k_in.defined() || lead_v_in.defined();
  const std::vector<int64_t> lead_shape{q_in.size(0), q_in.size(1), 1, q_in.size(3)};
  if (lead)
    for (const auto* t : {&lead_k_in, &lead_v_in})
      if (!t->defined() || t->sizes().vec() != lead_shape) return {};
  const at::Tensor q = widen(q_in), k = widen(k_in), v = widen(v_in);
  if (!attention_applies(q, k, v)) return {};
  const double scale = 1.0 / std::sqrt(double(q.size(3)));
  const auto none = at::empty({0}, q.options());
  if (!lead) return CausalAttentionFn::apply(q, k, v, none, none, scale, false, 0.0);
  const at::Tensor lead_k = widen(lead_k_in), lead_v = widen(lead_v_in);
  if (!plain_cpu_float(lead_k) || !plain_cpu_float(lead_v)) return {};
  return CausalAttentionFn::apply(q, k, v, lead_k, lead_v, scale, false, 0.0);
}

at::Tensor causal_sigmoid_attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                    double bias) {
  if (!attention_shape_ok(q_in, k_in, v_in)) return {};
  const at::Tensor q = widen(q_in), k = widen(k_in), v = widen(v_in);
  if (!attention_applies(q, k, v)) return {};
  const auto none = at::empty({0}, q.options());
  return CausalAttentionFn::apply(q, k, v, none, none, 1.0 / std::sqrt(double(q.size(3))), true, bias);
}

std::pair<at::Tensor, at::Tensor> masked_ce(const at::Tensor& logits, const at::Tensor& targets,
                                            const at::Tensor& mask) {
  const int64_t V = logits.size(-1);
  auto ce = at::cross_entropy_loss(logits.to(at::kFloat).reshape({-1, V}), targets.reshape({-1}), {},
                                   at::Reduction::None);
  auto m = mask.reshape({-1});
  return {(ce * m).sum(), m.sum()};
}

std::pair<at::Tensor, at::Tensor> linear_masked_ce(const at::Tensor& h, const at::Tensor& weight,
                                                   const at::Tensor& targets, const at::Tensor& mask) {
  const int64_t C = h.size(-1);
  if (fused_cpu_enabled() && !autocast_on() && plain_cpu_float(h) && plain_cpu_float(weight) && weight.dim() == 2 &&
      weight.size(1) == C && h.numel() > 0) {
    const int64_t V = weight.size(0);
    auto t = targets.reshape({-1}).to(at::kLong).contiguous();
    const auto lo = t.min().item<int64_t>(), hi = t.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < V, "linear_masked_ce: target ids ", lo, "..", hi, " outside 0..", V - 1);
    auto m = mask.reshape({-1}).to(at::kFloat).contiguous();
    auto h2 = h.reshape({-1, C}).contiguous();
    auto w = weight.is_contiguous() ? weight : weight.contiguous();
    const bool need = at::GradMode::is_enabled() && (h.requires_grad() || weight.requires_grad());
    return {LinearCeFn::apply(h2, w, t, m, need), m.sum()};
  }
  return masked_ce(at::linear(h, weight), targets, mask);
}

}  // namespace ablate::modules::kernels
