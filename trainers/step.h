// Pieces of a training step shared by the trainer, the benchmark and the commands that load a
// checkpoint's weights into a model (probe, compare, export).
#pragma once

#include <ATen/Tensor.h>
#include <ATen/autocast_mode.h>

#include <string>
#include <utility>
#include <vector>

#include "modules/model.h"
#include "trainers/checkpoint.h"
#include "trainers/optimizer.h"

namespace ablate::trainers {

// bf16 autocast on `device` (CUDA or CPU) for the scope's lifetime (LibTorch has no C++ guard); a
// no-op when `enabled` is false. Restores the previous autocast state on exit. On CPU, matrix
// products then run in bf16 through oneDNN (AMX where the processor has it) and the fused fp32
// kernels (modules/kernels.h) widen their bf16 inputs and run in fp32.
class AutocastScope {
 public:
  AutocastScope(bool enabled, at::DeviceType device) : enabled_(enabled), device_(device) {
    if (!enabled_) return;
    prev_enabled_ = at::autocast::is_autocast_enabled(device_);
    prev_dtype_ = at::autocast::get_autocast_dtype(device_);
    at::autocast::set_autocast_enabled(device_, true);
    at::autocast::set_autocast_dtype(device_, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(device_, prev_enabled_);
    at::autocast::set_autocast_dtype(device_, prev_dtype_);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled_;
  at::DeviceType device_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

// The forward request of a training step: no logits, lm_loss applies the head.
inline modules::ProbeRequest without_logits() {
  modules::ProbeRequest r;
  r.logits = false;
  return r;
}

// Next-token cross entropy (in fp32) summed over the positions `mask` selects, and the number of
// those positions: (sum, count), both scalars on the model's device, nothing read back. For a
// forward run with `ProbeRequest::logits = false` the LM head is applied here, by the fused CPU
// kernel when it applies (modules/kernels.h), which never materialises the logits; otherwise
// exactly modules::kernels::masked_ce on the logits.
std::pair<at::Tensor, at::Tensor> lm_loss(const modules::ForwardResult& out, const at::Tensor& targets,
                                          const at::Tensor& mask);

// How many times slower a bf16 matrix product is than an fp32 one on this CPU (a 256 x 256 x 256
// product, best of 3, on the current intra-op threads; a few milliseconds). LibTorch multiplies bf16
// matrices through oneDNN only on CPUs with AVX-512 (or AMX); elsewhere (AVX2-only CPUs such as AMD
// Zen 2/3) it falls back to a reference loop, and bf16 autocast then trains ~20x slower than fp32.
double cpu_bf16_matmul_slowdown();

// The warning the trainer and the benchmark log for train.precision bf16 on CPU when `slowdown`
// (cpu_bf16_matmul_slowdown) is above 2, else "".
std::string cpu_bf16_warning(double slowdown);

// Measures cpu_bf16_matmul_slowdown, logs cpu_bf16_warning when there is one, returns the ratio.
double warn_if_cpu_bf16_slow();

// A run's model as train() builds it, and the benchmark too, so that it measures the step that
// training runs: the generator seeded with `seed`, the model built from `options`, moved to `device`
// and in training mode, and its parameters in the optimiser's order with their weight-decay groups.
// `vocab_needed` is the loader's (data::Loader::vocab_needed); UserError naming model.vocab and
// `tokenizer` when the model has fewer token ids.
struct TrainModel {
  modules::LanguageModel model{nullptr};
  std::vector<NamedParameter> params;
};
TrainModel build_train_model(const modules::ModelOptions& options, int64_t seed, const at::Device& device,
                             int64_t vocab_needed, const std::string& tokenizer);

// Copies saved parameters into `model` by name. UserError naming `source` if a parameter is
// missing, has another shape, or the file holds parameters the model lacks.
void load_parameters(modules::LanguageModel& model, const Tensors& saved, const std::string& source);

}  // namespace ablate::trainers
