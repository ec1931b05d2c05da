#include "trainers/step.h"

#include <ATen/ATen.h>

#include <map>

#include "data/core/errors.h"
#include "modules/kernels.h"

namespace ablate::trainers {

std::pair<at::Tensor, at::Tensor> lm_loss(const modules::ForwardResult& out, const at::Tensor& targets,
                                          const at::Tensor& mask) {
  if (out.logits.defined()) return modules::kernels::masked_ce(out.logits, targets, mask);
  return modules::kernels::linear_masked_ce(out.hidden, out.head_weight, targets, mask);
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
    item.value().copy_(it->second);
  }
  if (by_name.size() != params.size())
    throw UserError(source + ": holds " + std::to_string(by_name.size()) + " parameters, the model has " +
                    std::to_string(params.size()));
}

}  // namespace ablate::trainers
