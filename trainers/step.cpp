#include "trainers/step.h"

#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <map>

#include "data/core/errors.h"
#include "data/core/log.h"
#include "modules/kernels.h"

namespace ablate::trainers {

std::pair<at::Tensor, at::Tensor> lm_loss(const modules::ForwardResult& out, const at::Tensor& targets,
                                          const at::Tensor& mask) {
  if (out.logits.defined()) return modules::kernels::masked_ce(out.logits, targets, mask);
  return modules::kernels::linear_masked_ce(out.hidden, out.head_weight, targets, mask);
}


TrainModel build_train_model(const modules::ModelOptions& options, int64_t seed, const at::Device& device,
                             int64_t vocab_needed, const std::string& tokenizer) {
  if (vocab_needed > options.vocab)
    throw UserError("model.vocab: is " + std::to_string(options.vocab) + " but the data needs " +
                    std::to_string(vocab_needed) + " token ids (tokenizer '" + tokenizer + "')");
  at::manual_seed(seed);
  TrainModel t;
  t.model = modules::LanguageModel(options);
  t.model->to(device);
  t.model->train();
  for (auto& item : t.model->named_parameters(/*recurse=*/true))
    t.params.push_back({item.key(), item.value(), modules::LanguageModelImpl::decays(item.key(), item.value())});
  return t;
}

void load_parameters(modules::LanguageModel& model, const Tensors& saved, const std::string& source) {
  std::map<std::string, at::Tensor> by_name(saved.begin(), saved.end());
  at::NoGradGuard no_grad;
  auto params = model->named_parameters(/*recurse=*/true);
  for (auto& item : params) {
    auto it = by_name.find(item.key());
    if (it == by_name.end()) throw UserError(source + ": parameter '" + item.key() + "' is missing");
    if (it->second.sizes() != item.value().sizes())
      throw UserError(source + ": parameter '" + item.key() + "' has shape " + c10::str(it->second.sizes()) +
                      ", the model expects " + c10::str(item.value().sizes()));
    if (!at::isFloatingType(it->second.scalar_type()))
      throw UserError(source + ": parameter '" + item.key() + "' is stored as " +
                      std::string(c10::toString(it->second.scalar_type())) + ", expected a floating-point type");
    item.value().copy_(it->second);
  }
  if (by_name.size() != params.size())
    throw UserError(source + ": holds " + std::to_string(by_name.size()) + " parameters, the model has " +
                    std::to_string(params.size()));
}

double cpu_bf16_matmul_slowdown() {
  at::NoGradGuard no_grad;
  // Plain products in the two dtypes even if a caller has CPU autocast on.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  // Fixed inputs: the global generator (saved in checkpoints) is not touched.
  const auto a = at::arange(256 * 256, at::kFloat).reshape({256, 256}).mul(0.37).sin();
  const auto b = at::arange(256 * 256, at::kFloat).reshape({256, 256}).mul(0.11).cos();
  auto best = [](const at::Tensor& x, const at::Tensor& y) {
    double t = std::numeric_limits<double>::infinity();
    at::Tensor out = at::mm(x, y);  // warm-up: packing buffers, oneDNN primitive creation
    for (int i = 0; i < 3; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      out = at::mm(x, y);
      t = std::min(t, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return std::max(t, 1e-9);
  };
  const double fp32 = best(a, b);
  const double bf16 = best(a.to(at::kBFloat16), b.to(at::kBFloat16));
  return bf16 / fp32;
}

double warn_if_cpu_bf16_slow() {
  const double slowdown = cpu_bf16_matmul_slowdown();
  if (auto w = cpu_bf16_warning(slowdown); !w.empty()) log::warn(w);
  return slowdown;
}

std::string cpu_bf16_warning(double slowdown) {
  if (!(slowdown > 2.0)) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f", slowdown);
  return std::string("train.precision bf16: this CPU multiplies bf16 matrices ") + buf +
         "x slower than fp32 (LibTorch has a fast bf16 path only with AVX-512 or AMX); fp32 trains faster here";
}

}  // namespace ablate::trainers
