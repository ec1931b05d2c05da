// Interventions (modules/probe.h): residual edits set exactly the requested entries after the
// requested blocks, SinkMask hides the sink key in every layer and head (softmax renormalised over
// the remaining keys), and a request without an intervention is the plain forward bit for bit.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "modules/model.h"
#include "tests/modules/helpers.h"

using namespace ablate::modules;
using namespace ablate::modules::testing;

namespace {

ModelOptions with_variant(const std::string& variant) {
  auto o = tiny();
  o.attention.variant = variant;
  return o;
}

at::Tensor tokens_for(const ModelOptions& o, int64_t B, int64_t T) { return at::randint(o.vocab, {B, T}, at::kLong); }

bool has_learned_key(const std::string& variant) { return variant == "k_bias" || variant == "kv_bias"; }

}  // namespace

TEST_CASE("no intervention is the plain forward, bit for bit", "[modules][interventions]") {
  torch::NoGradGuard no_grad;
  for (const auto& variant : attention_variant_names()) {
    INFO(variant);
    torch::manual_seed(1);
    const auto o = with_variant(variant);
    LanguageModel m(o);
    const auto tokens = tokens_for(o, 2, 6);
    const auto plain = m->forward(tokens).logits;
    ProbeRequest none;  // default: no probe tensor, no intervention
    CHECK_FALSE(none.intervention.any());
    CHECK(at::equal(m->forward(tokens, none).logits, plain));
    // An edit that selects no entry leaves the stream as it is.
    ProbeRequest empty;
    empty.intervention.residual.push_back({1, true, at::zeros({1, 1, o.d_model}, at::kBool), {}});
    CHECK(at::equal(m->forward(tokens, empty).logits, plain));
  }
}

TEST_CASE("residual edits set the entries after the requested block", "[modules][interventions]") {
  torch::NoGradGuard no_grad;
  torch::manual_seed(2);
  const auto o = tiny();  // 2 layers: blocks 1..4
  LanguageModel m(o);
  const int64_t B = 3, T = 6, C = o.d_model;
  const auto tokens = tokens_for(o, B, T);
  ProbeRequest observe;
  observe.residual = true;
  const auto plain = m->forward(tokens, observe);

  SECTION("zero one channel at one position after block 3 only") {
    ProbeRequest req = observe;
    req.intervention.residual.push_back({3, false, residual_mask(T, C, {{2, 5}}), {}});
    const auto r = m->forward(tokens, req);
    REQUIRE(r.residual.size() == 5);
    CHECK(at::equal(r.residual[2], plain.residual[2]));  // before the edit: untouched
    CHECK(r.residual[3].select(1, 2).select(1, 5).eq(0).all().item<bool>());
    CHECK(plain.residual[3].select(1, 2).select(1, 5).ne(0).all().item<bool>());
    // Every other entry of block 3 is what the block produced.
    auto other = residual_mask(T, C, {{2, 5}}).logical_not().expand({B, T, C});
    CHECK(at::equal(r.residual[3].masked_select(other), plain.residual[3].masked_select(other)));
    // Not pinned: block 4 writes into the entry again; later positions see the change.
    CHECK(r.residual[4].select(1, 2).select(1, 5).ne(0).all().item<bool>());
    CHECK_FALSE(at::allclose(r.logits.narrow(1, 2, T - 2), plain.logits.narrow(1, 2, T - 2)));
    CHECK(at::allclose(r.logits.narrow(1, 0, 2), plain.logits.narrow(1, 0, 2), 1e-6, 1e-6));  // causal
  }

  SECTION("pinned from block 1 on, to given values") {
    ProbeRequest req = observe;
    const auto values = at::full({1, 1, C}, 7.0, at::kDouble);  // any float dtype
    req.intervention.residual.push_back({1, true, residual_mask(T, C, {{0, 1}, {4, 3}}), values});
    const auto r = m->forward(tokens, req);
    CHECK(at::equal(r.residual[0], plain.residual[0]));
    for (int64_t b = 1; b <= 4; ++b) {
      INFO("block " << b);
      CHECK(r.residual[b].select(1, 0).select(1, 1).eq(7.0f).all().item<bool>());
      CHECK(r.residual[b].select(1, 4).select(1, 3).eq(7.0f).all().item<bool>());
    }
  }

  SECTION("per-sequence masks, the embedding output (block 0)") {
    ProbeRequest req = observe;
    auto mask = at::zeros({B, T, C}, at::kBool);
    mask[1][3][0] = true;  // only sequence 1
    req.intervention.residual.push_back({0, false, mask, {}});
    const auto r = m->forward(tokens, req);
    CHECK(r.residual[0][1][3][0].item<float>() == 0.0f);
    CHECK(at::equal(r.residual[0][0], plain.residual[0][0]));
    CHECK(at::equal(r.logits[0], plain.logits[0]));  // the fast path, sequence 0 untouched
    CHECK_FALSE(at::equal(r.logits[1], plain.logits[1]));
  }

  SECTION("bad requests are refused") {
    ProbeRequest req;
    req.intervention.residual.push_back({5, false, residual_mask(T, C, {{0, 0}}), {}});
    CHECK_THROWS(m->forward(tokens, req));
    req.intervention.residual[0] = {1, false, at::ones({1, T, C}), {}};  // not bool
    CHECK_THROWS(m->forward(tokens, req));
    CHECK_THROWS(residual_mask(T, C, {{T, 0}}));
  }
}

TEST_CASE("SinkMask hides the sink key in every layer and head", "[modules][interventions]") {
  torch::NoGradGuard no_grad;
  for (const auto& variant : attention_variant_names()) {
    INFO(variant);
    torch::manual_seed(3);
    const auto o = with_variant(variant);
    LanguageModel m(o);
    randomize(*m, 0.5);
    const int64_t T = 6;
    const auto tokens = tokens_for(o, 2, T);
    ProbeRequest observe;
    observe.attention = true;
    const auto plain = m->forward(tokens, observe);
    const bool normalised = variant != "sigmoid";

    for (auto mode : {SinkMask::sink, SinkMask::first_position, SinkMask::both}) {
      INFO("mode " << int(mode));
      ProbeRequest req = observe;
      req.intervention.sink_mask = mode;
      const auto r = m->forward(tokens, req);
      REQUIRE(r.attention.size() == size_t(o.n_layers));
      const int64_t off = r.key_offset;  // key index of stream position 0
      std::vector<int64_t> hidden;       // key indices
      if (mode != SinkMask::first_position && has_learned_key(variant)) hidden.push_back(0);
      if (mode != SinkMask::sink || !has_learned_key(variant)) hidden.push_back(off);
      CHECK(r.logits.isfinite().all().item<bool>());
      CHECK_FALSE(at::allclose(r.logits, plain.logits));
      for (const auto& a : r.attention) {
        const int64_t S = a.size(2);
        for (int64_t key : hidden) {
          // Queries t >= 1 never use it; a query keeps its own position (query 0 has no other key).
          const int64_t from = key == off ? 1 : 0;
          CHECK(a.select(-1, key).narrow(-1, from, S - from).eq(0).all().item<bool>());
        }
        if (normalised) CHECK(at::allclose(a.sum(-1), at::ones({}), 1e-5, 1e-5));
      }
    }

    // Softmax renormalises over the remaining keys: in layer 0 (same input as the plain forward),
    // A'[t, s] = A[t, s] / (1 - A[t, 0]) for t >= 1 and the other keys s.
    if (variant == "softmax" || variant == "sink_token") {
      ProbeRequest req = observe;
      req.intervention.sink_mask = SinkMask::sink;
      const auto a = m->forward(tokens, req).attention[0].narrow(2, 1, T + plain.prefix - 1);
      const auto p = plain.attention[0].narrow(2, 1, T + plain.prefix - 1);
      const auto expect = p / (1 - p.narrow(-1, 0, 1));
      CHECK(at::allclose(a.narrow(-1, 1, a.size(-1) - 1), expect.narrow(-1, 1, a.size(-1) - 1), 1e-5, 1e-5));
    }

    // The mask applies in every layer whether or not a layer's attention is requested.
    ProbeRequest all;
    all.intervention.sink_mask = SinkMask::sink;
    ProbeRequest one = all;
    one.attention = true;
    one.attention_layers = {1};
    const auto r1 = m->forward(tokens, one);
    CHECK(r1.probed_layers == std::vector<int64_t>{1});
    CHECK(r1.attention.size() == 1);
    CHECK(at::equal(r1.logits, m->forward(tokens, all).logits));
  }
}

TEST_CASE("interventions are differentiable experiments", "[modules][interventions]") {
  torch::manual_seed(4);
  const auto o = tiny();
  LanguageModel m(o);
  const auto tokens = tokens_for(o, 2, 5);
  ProbeRequest req;
  req.intervention.sink_mask = SinkMask::sink;
  req.intervention.residual.push_back({2, true, residual_mask(5, o.d_model, {{0, 0}}), {}});
  m->forward(tokens, req).logits.sum().backward();
  for (const auto& p : m->parameters()) {
    REQUIRE(p.grad().defined());
    CHECK(p.grad().isfinite().all().item<bool>());
  }
}
