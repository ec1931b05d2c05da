// Test helpers for modules/: finite-difference gradient checks and tiny model options.
#pragma once

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <torch/nn/module.h>

#include <functional>
#include <string>
#include <vector>

#include "modules/options.h"

namespace ablate::modules::testing {

// Tiny tensors: intra-op threads only add barrier waits, which on a loaded 2-core CI machine cost
// more than the work (measured 4x slower). Every test file includes this header.
inline const bool single_threaded = [] {
  at::set_num_threads(1);
  return true;
}();

// Checks the gradient of sum(f() ⊙ w) (w fixed random) with respect to every tensor in `inputs`
// (leaves requiring grad, double precision) against central differences on up to `entries`
// elements of each.
inline void check_gradients(const std::function<at::Tensor()>& f, const std::vector<at::Tensor>& inputs,
                            int64_t entries = 4, double eps = 1e-6) {
  auto w = at::randn_like(f().detach());
  for (auto t : inputs)
    if (t.grad().defined()) t.mutable_grad().zero_();
  (f() * w).sum().backward();
  torch::NoGradGuard no_grad;
  auto loss = [&] { return (f() * w).sum().item<double>(); };
  for (size_t n = 0; n < inputs.size(); ++n) {
    auto t = inputs[n];
    REQUIRE(t.grad().defined());
    auto flat = t.detach().view({-1});
    auto grad = t.grad().reshape({-1});
    int64_t count = std::min<int64_t>(entries, flat.numel());
    for (int64_t j = 0; j < count; ++j) {
      int64_t i = (j * 7919 + n) % flat.numel();
      double old = flat[i].item<double>();
      flat[i].fill_(old + eps);
      double up = loss();
      flat[i].fill_(old - eps);
      double down = loss();
      flat[i].fill_(old);
      double numeric = (up - down) / (2 * eps), analytic = grad[i].item<double>();
      INFO("input " << n << " entry " << i << ": numeric " << numeric << " analytic " << analytic);
      REQUIRE(std::abs(numeric - analytic) <= 1e-5 + 1e-4 * std::abs(numeric));
    }
  }
}

inline void randomize(torch::nn::Module& m, double scale = 1.0) {
  torch::NoGradGuard no_grad;
  for (auto p : m.parameters()) p.uniform_(-scale, scale);
}

inline at::Tensor param(torch::nn::Module& m, const std::string& name) {
  auto params = m.named_parameters();
  auto* p = params.find(name);
  INFO("parameter " << name);
  REQUIRE(p != nullptr);
  return *p;
}

inline bool close(const at::Tensor& a, const at::Tensor& b, double tol) {
  return a.sizes() == b.sizes() && at::allclose(a, b, tol, tol);
}

// A tiny model every variant test starts from.
inline ModelOptions tiny() {
  ModelOptions o;
  o.d_model = 8;
  o.n_layers = 2;
  o.n_heads = 2;
  o.head_dim = 4;
  o.vocab = 11;
  o.max_seq_len = 8;
  o.init.std = 0.3;
  return o;
}

}  // namespace ablate::modules::testing
