// run_probe on a tiny random model: shapes, invariants, and that chunking the attention layers
// (the memory bound) and the compact mode do not change the numbers.
#include "analysis/probe.h"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>

using namespace ablate;
using namespace ablate::analysis;

namespace {

modules::ModelOptions tiny() {
  modules::ModelOptions o;
  o.d_model = 32;
  o.n_layers = 2;
  o.n_heads = 2;
  o.head_dim = 16;
  o.vocab = 64;
  o.max_seq_len = 16;
  return o;
}

}  // namespace

TEST_CASE("run_probe on a tiny model", "[probe]") {
  torch::manual_seed(0);
  modules::LanguageModel model(tiny());
  const at::Tensor seqs = at::randint(0, 64, {6, 16}, at::kLong);
  ProbeOptions po;
  po.batch = 4;
  ProbeExtras ex;
  ex.delimiter_ids = {3, 7, 11};
  ex.ubiquity_tokens = 8;
  const ProbeReport full = run_probe(model, seqs, po, /*compact=*/false, ex);
  CHECK(full.sequences == 6);
  REQUIRE(full.spike.blocks.size() == 5);  // embedding + 2 layers x 2 blocks
  REQUIRE(full.sink.alpha.size() == 1);
  CHECK(full.sink.alpha[0].sizes() == at::IntArrayRef{2, 2});
  CHECK(full.sink.sink_mass > 0.0);
  CHECK(full.sink.sink_mass < 1.0);
  CHECK(std::abs(full.loss - std::log(64.0)) < 1.0);  // near-uniform predictions at init
  CHECK(full.spike_tokens >= 6);                       // at least one per sequence
  CHECK(full.ubiquity_tokens == 8);
  CHECK(full.amplifier.size() == 2);                   // swiglu by default
  REQUIRE(full.key_rank.defined());
  CHECK(full.key_rank.size(0) == 2);

  // Attention one layer at a time gives the same numbers.
  ProbeExtras small = ex;
  small.attention_budget_bytes = 1;
  const ProbeReport chunked = run_probe(model, seqs, po, /*compact=*/false, small);
  CHECK(at::allclose(chunked.sink.alpha[0], full.sink.alpha[0]));
  CHECK(chunked.sink.sink_mass == Approx(full.sink.sink_mass));
  CHECK(chunked.spike_token_cosine == Approx(full.spike_token_cosine));

  // The compact probe reproduces the spike profile and the sink of the full one.
  const ProbeReport compact = run_probe(model, seqs, po, /*compact=*/true, ex);
  CHECK(compact.spike.spike_magnitude == Approx(full.spike.spike_magnitude));
  CHECK(compact.sink.sink_eps[0] == Approx(full.sink.sink_eps[0]));
  CHECK(compact.loss == Approx(full.loss));

  const nlohmann::json j = to_json(full);
  CHECK(j["spike"]["blocks"].size() == 5);
  CHECK(j["sink"]["alpha1"].size() == 2);
  CHECK(j.contains("geometry"));
  CHECK_FALSE(to_json(compact).contains("geometry"));
  const std::string table = to_table(full);
  CHECK(table.find("spike magnitude") != std::string::npos);
  CHECK(table.find("interventions not measured") == std::string::npos);  // interventions_test.cpp
  CHECK(to_table(compact).find("interventions not measured: full probe only") != std::string::npos);
  CHECK(model->is_training());  // restored
}
