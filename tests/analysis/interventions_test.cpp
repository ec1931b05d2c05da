// The probe's interventions (docs/metrics.md, Interventions): on a tiny random model all three
// are measured with finite losses (spike-channel fallback, no massive activation at init); on a
// planted massive activation the mean intervention is harmless and zeroing is not.
#include "analysis/probe.h"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "tests/analysis/helpers.h"

using namespace ablate;
using namespace ablate::analysis;

namespace {

using ablate::analysis::testing::tiny;

ProbeExtras quick() {
  ProbeExtras ex;
  ex.ubiquity_tokens = 0;
  return ex;
}

}  // namespace

TEST_CASE("the full probe measures the three interventions", "[probe][interventions]") {
  at::set_num_threads(1);
  torch::manual_seed(0);
  modules::LanguageModel model(tiny());
  const at::Tensor seqs = at::randint(0, 64, {6, 16}, at::kLong);
  ProbeOptions po;
  po.batch = 4;
  const ProbeReport r = run_probe(model, seqs, po, /*compact=*/false, quick());
  const InterventionReport& iv = r.interventions;
  CHECK(r.spike.massive_total == 0);  // random init: the spike-channel fallback
  CHECK(iv.selection == "spike");
  CHECK(iv.block == r.spike.step_up);
  CHECK(iv.entries >= 6);  // at least one spike token per sequence
  for (const auto& [c, n] : iv.channels) {
    CHECK(std::find(r.spike.spike_channels.begin(), r.spike.spike_channels.end(), c) != r.spike.spike_channels.end());
    CHECK(iv.channel_mean.count(c) == 1);
  }
  for (const InterventionLoss* l : {&iv.zero, &iv.mean, &iv.mask_sink}) {
    CHECK(l->measured);
    CHECK(std::isfinite(l->loss));
    CHECK(l->delta == Approx(l->loss - r.loss));
  }
  CHECK(iv.mask_sink.delta != 0.0);
  CHECK(iv.sink.find("stream position 0") != std::string::npos);

  const nlohmann::json j = to_json(r);
  REQUIRE(j.contains("interventions"));
  for (const char* k : {"zero", "mean", "mask_sink"}) CHECK(j["interventions"][k]["loss"].is_number());
  CHECK(j["interventions"]["block"] == iv.block);
  const std::string table = to_table(r);
  CHECK(table.find("mask_sink") != std::string::npos);
  CHECK(table.find("interventions not measured") == std::string::npos);
  for (const auto& n : r.notes) CHECK(n.find("intervention") == std::string::npos);
}

TEST_CASE("planted massive activation: mean is harmless, zero is not", "[probe][interventions]") {
  at::set_num_threads(1);
  torch::manual_seed(1);
  auto o = tiny();
  o.attention.variant = "k_bias";  // mask_sink hides the learned key
  modules::LanguageModel model(o);
  {
    // Token 0 carries 500 in channel 5: with init std 0.02 the median |h| is ~0.01, so the entry
    // is massive (> 100 and >= 1000 x median) in every block. Token 0 only at position 0.
    torch::NoGradGuard no_grad;
    model->named_parameters()["embed.weight"][0][5].fill_(500.0);
  }
  at::Tensor seqs = at::randint(1, 64, {6, 16}, at::kLong);
  seqs.select(1, 0).fill_(0);
  ProbeOptions po;
  po.batch = 4;
  const ProbeReport r = run_probe(model, seqs, po, /*compact=*/false, quick());
  const InterventionReport& iv = r.interventions;
  CHECK(iv.selection == "massive");
  CHECK(iv.block == 1);  // massive from the first block on
  CHECK(iv.entries == 6);
  CHECK(iv.channels == std::map<int64_t, int64_t>{{5, 6}});
  CHECK(iv.positions == std::map<int64_t, int64_t>{{0, 6}});
  CHECK(iv.channel_mean.at(5) > 400.0);
  INFO("zero " << iv.zero.delta << " mean " << iv.mean.delta << " mask_sink " << iv.mask_sink.delta);
  // Position 0 is the same in every sequence, so its mean is its value: the mean edit is the
  // identity up to the kernel path (fused here, explicit in part of the baseline pass).
  CHECK(std::abs(iv.mean.delta) < 1e-5);
  CHECK(std::abs(iv.zero.delta) > 1e-4);
  CHECK(std::abs(iv.zero.delta) > 100 * std::abs(iv.mean.delta));
  CHECK(iv.sink.find("k_bias") != std::string::npos);
  CHECK(std::isfinite(iv.mask_sink.loss));
}
