// run_probe on a tiny random model: shapes, invariants, and that chunking the attention layers
// (the memory bound) and the compact mode do not change the numbers.
#include "analysis/probe.h"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>

#include "tests/analysis/helpers.h"

using namespace ablate;
using namespace ablate::analysis;

using ablate::analysis::testing::tiny;

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

TEST_CASE("norm inputs: pre-norm's first equals the embedding block; post-norm's carry the spike", "[probe]") {
  torch::manual_seed(1);
  const at::Tensor seqs = at::randint(0, 64, {4, 16}, at::kLong);
  ProbeOptions po;
  po.batch = 4;
  {
    modules::LanguageModel pre(tiny());
    for (bool compact : {false, true}) {
      const ProbeReport r = run_probe(pre, seqs, po, compact, {});
      // attn_norm and ffn_norm of 2 layers, then final_norm: each sees the stream.
      REQUIRE(r.norm_input_names.size() == 5);
      CHECK(r.norm_input_names.front() == "layers.0.attn_norm");
      CHECK(r.norm_input_names.back() == "final_norm");
      // attn_norm of layer 0 reads the embedding output, block 0 of the spike profile.
      CHECK(r.norm_inputs[0].top1 == Approx(r.spike.blocks[0].top1));
      CHECK(r.norm_inputs[4].top1 == Approx(r.spike.blocks[4].top1));
      const nlohmann::json j = to_json(r);
      CHECK(j["spike"]["norm_inputs"]["names"].size() == 5);
      CHECK(j["spike"]["norm_inputs"]["peak_top1"].get<double>() >= r.spike.blocks[4].top1);
    }
  }
  {
    auto o = tiny();
    o.norm.placement = "post";
    modules::LanguageModel post(o);
    {
      torch::NoGradGuard g;
      // Plant a large value in one channel of the embedding: post-norm's inputs carry it, the
      // normalised stream after each norm does not.
      post->named_parameters()["embed.weight"].narrow(1, 3, 1).fill_(500.0);
    }
    const ProbeReport r = run_probe(post, seqs, po, /*compact=*/true, {});
    REQUIRE(r.norm_input_peak >= 0);
    CHECK(r.norm_inputs[r.norm_input_peak].top1 > 400.0);
    CHECK(r.spike.spike_magnitude < 0.1 * r.norm_inputs[r.norm_input_peak].top1);
  }
}
