// AdamW with decoupled weight decay over two groups (decayed matrices / undecayed gains and
// biases), the learning-rate schedules, and sync-free global-norm gradient clipping.
//
// Invariants:
// * The update is the fused ATen kernel (at::_fused_adamw_, CPU and CUDA) when `fused` allows,
//   else the same arithmetic with _foreach ops; both keep per-parameter step counters as
//   tensors, so the optimiser never reads a value back to the host.
// * state() / load_state() round-trip bit for bit (exact resume).
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "trainers/options.h"

namespace ablate::trainers {

struct NamedParameter {
  std::string name;
  at::Tensor tensor;  // a leaf with requires_grad
  bool decay = true;
};

class AdamW {
 public:
  AdamW(std::vector<NamedParameter> params, const OptimizerOptions& options);
  // One update at learning rate `lr`; parameters without a gradient are skipped.
  void step(double lr);
  // Gradients become undefined (PyTorch's set_to_none): the next backward allocates them.
  void zero_grad();
  bool fused() const { return fused_; }
  // Optimiser state as named tensors: "<param>.exp_avg", "<param>.exp_avg_sq", "<param>.step".
  std::vector<std::pair<std::string, at::Tensor>> state() const;
  // UserError (naming `source`) if a tensor is missing or has the wrong shape.
  void load_state(const std::vector<std::pair<std::string, at::Tensor>>& state, const std::string& source);
  const std::vector<NamedParameter>& parameters() const { return params_; }

 private:
  void step_group(const std::vector<size_t>& idx, double lr, double weight_decay);
  std::vector<NamedParameter> params_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_, steps_;
  OptimizerOptions options_;
  bool fused_ = false;
};

// Learning rate at optimiser step `step` (0-based) of `total`.
double learning_rate(const OptimizerOptions& opt, const ScheduleOptions& schedule, int64_t step, int64_t total);

// Scales every gradient so that their global L2 norm is at most max_norm (no-op for 0).
// Returns the norm before clipping as a 0-dim tensor on the parameters' device: no host sync.
at::Tensor clip_grad_norm(const std::vector<NamedParameter>& params, double max_norm);

}  // namespace ablate::trainers
