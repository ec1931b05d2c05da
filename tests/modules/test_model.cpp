// The LM over every registered variant: parameter count == closed form, causality, fast path ==
// probe path, probes' shapes, gradients vs finite differences, names, weight decay, init.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <torch/nn/module.h>

#include <functional>
#include <set>

#include "data/core/errors.h"
#include "modules/model.h"
#include "tests/modules/helpers.h"

using namespace ablate::modules;
using namespace ablate::modules::testing;

namespace {

struct Variant {
  std::string name;
  ModelOptions o;
};

// One axis at a time from the tiny base, plus combinations that interact (prefix + learned
// positions, grouped queries with extra keys, sandwich + qk-norm + dyt, tied heads).
std::vector<Variant> variants() {
  std::vector<Variant> v;
  auto add = [&](const std::string& name, const std::function<void(ModelOptions&)>& f) {
    auto o = tiny();
    f(o);
    v.push_back({name, o});
  };
  add("base", [](ModelOptions&) {});
  for (const auto& n : norm_type_names())
    add("norm " + n + " + qk_norm", [&](ModelOptions& o) {
      o.norm.type = n;
      o.norm.qk_norm = true;
    });
  for (const auto& n : norm_placement_names()) add("placement " + n, [&](ModelOptions& o) { o.norm.placement = n; });
  for (const auto& n : ffn_type_names()) add("ffn " + n, [&](ModelOptions& o) { o.ffn.type = n; });
  for (const auto& n : attention_variant_names()) add("attention " + n, [&](ModelOptions& o) { o.attention.variant = n; });
  for (const auto& k : gate_kind_names())
    for (const auto& g : gate_granularity_names())
      add("gate " + k + " " + g, [&](ModelOptions& o) {
        o.attention.gate.kind = k;
        o.attention.gate.granularity = g;
      });
  for (const auto& n : position_type_names()) add("position " + n, [&](ModelOptions& o) { o.position.type = n; });
  add("gqa kv_bias", [](ModelOptions& o) {
    o.n_heads = 4;
    o.n_kv_heads = 2;
    o.attention.variant = "kv_bias";
  });
  add("gqa softmax1 tied", [](ModelOptions& o) {
    o.n_heads = 4;
    o.n_kv_heads = 1;
    o.attention.variant = "softmax1";
    o.tie_embeddings = true;
  });
  add("sink_token learned position-gate", [](ModelOptions& o) {
    o.attention.variant = "sink_token";
    o.position.type = "learned";
    o.attention.gate.kind = "position";
  });
  add("sink_token token-gate elementwise", [](ModelOptions& o) {
    o.attention.variant = "sink_token";
    o.attention.gate.kind = "token";
    o.attention.gate.granularity = "elementwise";
  });
  add("sandwich dyt qk_norm gelu", [](ModelOptions& o) {
    o.norm.placement = "sandwich";
    o.norm.type = "dyt";
    o.norm.qk_norm = true;
    o.ffn.type = "gelu";
    o.ffn.hidden = 12;
  });
  add("post layernorm sigmoid conditional", [](ModelOptions& o) {
    o.norm.placement = "post";
    o.norm.type = "layernorm";
    o.attention.variant = "sigmoid";
    o.attention.sigmoid_bias = -1.0;
    o.attention.gate.kind = "conditional";
  });
  return v;
}

int64_t real_count(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

at::Tensor tokens_for(const ModelOptions& o, int64_t B, int64_t T) { return at::randint(o.vocab, {B, T}, at::kLong); }

ProbeRequest everything() {
  ProbeRequest p;
  p.residual = p.norms = p.keys = p.attention = true;
  return p;
}

}  // namespace

TEST_CASE("parameter_count equals the real count for every registry combination", "[modules][model][count]") {
  std::vector<ModelOptions> all;
  for (const auto& v : variants()) all.push_back(v.o);
  for (const auto& nt : norm_type_names())
    for (const auto& pl : norm_placement_names())
      for (const auto& ff : ffn_type_names())
        for (bool qk : {false, true}) {
          auto o = tiny();
          o.n_layers = 1;
          o.norm.type = nt;
          o.norm.placement = pl;
          o.ffn.type = ff;
          o.norm.qk_norm = qk;
          all.push_back(o);
        }
  for (const auto& at : attention_variant_names())
    for (const auto& gk : gate_kind_names())
      for (const auto& gg : gate_granularity_names())
        for (const auto& pt : position_type_names())
          for (bool tie : {false, true}) {
            auto o = tiny();
            o.n_layers = 1;
            o.n_heads = 4;
            o.n_kv_heads = 2;
            o.attention.variant = at;
            o.attention.gate.kind = gk;
            o.attention.gate.granularity = gg;
            o.position.type = pt;
            o.tie_embeddings = tie;
            o.ffn.type = "gelu";
            o.ffn.hidden = 5;
            all.push_back(o);
          }
  for (const auto& o : all) {
    LanguageModel m(o);
    INFO(o.norm.type << " " << o.norm.placement << " " << o.ffn.type << " qk " << o.norm.qk_norm << " "
                     << o.attention.variant << " " << o.attention.gate.kind << " " << o.attention.gate.granularity
                     << " " << o.position.type << " tie " << o.tie_embeddings);
    REQUIRE(parameter_count(o) == real_count(*m));
  }
}

TEST_CASE("every variant is causal, and its fast path equals its probe path", "[modules][model]") {
  for (const auto& v : variants()) {
    INFO("variant " << v.name);
    at::manual_seed(7);
    LanguageModel m(v.o);
    const int64_t B = 2, T = v.o.max_seq_len;
    auto tokens = tokens_for(v.o, B, T);
    auto fast = m->forward(tokens).logits;
    REQUIRE(fast.sizes() == at::IntArrayRef({B, T, v.o.vocab}));
    REQUIRE(at::isfinite(fast).all().item<bool>());
    // Causality: new tokens after t never change logits at ≤ t (fast and probe paths).
    for (int64_t t : {int64_t(0), int64_t(3), T - 2}) {
      auto changed = tokens.clone();
      changed.narrow(1, t + 1, T - t - 1).copy_(at::randint(v.o.vocab, {B, T - t - 1}, at::kLong));
      auto a = m->forward(changed).logits;
      auto b = m->forward(changed, everything()).logits;
      INFO("t = " << t);
      CHECK(close(a.narrow(1, 0, t + 1), fast.narrow(1, 0, t + 1), 1e-5));
      CHECK(close(b.narrow(1, 0, t + 1), fast.narrow(1, 0, t + 1), 1e-5));
    }
    // Fast path == probe path, with every probe on or only some.
    auto r = m->forward(tokens, everything());
    CHECK(close(r.logits, fast, 1e-5));
    ProbeRequest some;
    some.attention = true;
    some.attention_layers = {1};
    auto r1 = m->forward(tokens, some);
    CHECK(close(r1.logits, fast, 1e-5));
    CHECK(r1.probed_layers == std::vector<int64_t>{1});
    CHECK(r1.attention.size() == 1);
    CHECK(r1.keys.empty());
    CHECK(r1.residual.empty());

    // Probe shapes (probe.h).
    const int64_t P = prefix_tokens(v.o), S = P + T, L = v.o.n_layers, H = v.o.n_heads,
                  G = effective_kv_heads(v.o), C = v.o.d_model, E = v.o.head_dim;
    CHECK(r.prefix == P);
    REQUIRE(r.residual.size() == size_t(2 * L + 1));
    for (const auto& h : r.residual) {
      CHECK(h.sizes() == at::IntArrayRef({B, S, C}));
      CHECK(!h.requires_grad());
    }
    REQUIRE(r.probed_layers.size() == size_t(L));
    REQUIRE(r.attention.size() == size_t(L));
    REQUIRE(r.keys.size() == size_t(L));
    const int64_t K = r.keys[0].size(2);
    CHECK(K >= S);
    CHECK(r.keys[0].sizes() == at::IntArrayRef({B, G, K, E}));
    CHECK(r.attention[0].sizes() == at::IntArrayRef({B, H, S, K}));
    CHECK(!r.attention[0].requires_grad());
    CHECK((r.key_offset == 0 || r.key_offset == 1));
    // Query s never attends to a later sequence position.
    for (int64_t s = 0; s + 1 < S; ++s)
      CHECK(r.attention[0].select(2, s).narrow(-1, r.key_offset + s + 1, S - s - 1).abs().max().item<double>() == 0.0);
    // Norm probes: one per applied norm, input and output shaped alike.
    const auto& recipe = placement_registry().get(v.o.norm.placement);
    const int64_t sublayers = ffn_registry().get(v.o.ffn.type).present ? 2 : 1;
    CHECK(int64_t(r.norms.size()) ==
          L * (sublayers * recipe.norms_per_sublayer() + (v.o.norm.qk_norm ? 2 : 0)) + (recipe.final_norm ? 1 : 0));
    for (const auto& n : r.norms) CHECK(n.input.sizes() == n.output.sizes());
  }
}

TEST_CASE("probe attention rows: softmax variants sum to one, the learned key is position 0", "[modules][model]") {
  for (const auto& variant : attention_variant_names()) {
    auto o = tiny();
    o.attention.variant = variant;
    INFO("attention " << variant);
    at::manual_seed(8);
    LanguageModel m(o);
    ProbeRequest p;
    p.attention = true;
    auto r = m->forward(tokens_for(o, 1, 6), p);
    auto sums = r.attention[0].sum(-1);
    if (variant != "sigmoid") CHECK(at::allclose(sums, at::ones_like(sums), 1e-5, 1e-5));
  }
}

TEST_CASE("gradients of the whole LM match finite differences for every variant", "[modules][model][grad]") {
  for (const auto& v : variants()) {
    INFO("variant " << v.name);
    at::manual_seed(9);
    auto o = v.o;
    o.max_seq_len = 4;
    LanguageModel m(o);
    m->to(at::kDouble);
    auto tokens = tokens_for(o, 1, 4);
    check_gradients([&] { return m->forward(tokens).logits; }, m->parameters(), /*entries=*/2);
  }
}

TEST_CASE("parameter names are the documented llama-like names", "[modules][model][names]") {
  auto o = tiny();
  o.n_layers = 1;
  LanguageModel m(o);
  std::vector<std::string> names;
  for (const auto& p : m->named_parameters()) names.push_back(p.key());
  CHECK(names == std::vector<std::string>{"embed.weight", "layers.0.attn_norm.weight", "layers.0.attn.wq.weight",
                                          "layers.0.attn.wk.weight", "layers.0.attn.wv.weight",
                                          "layers.0.attn.wo.weight", "layers.0.ffn_norm.weight",
                                          "layers.0.ffn.w_gate.weight", "layers.0.ffn.w_up.weight",
                                          "layers.0.ffn.w_down.weight", "final_norm.weight", "lm_head.weight"});

  o.norm.placement = "sandwich";
  o.norm.qk_norm = true;
  o.norm.type = "dyt";
  o.attention.variant = "kv_bias";
  o.attention.gate.kind = "conditional";
  o.position.type = "learned";
  o.tie_embeddings = true;
  LanguageModel m2(o);
  std::set<std::string> n2;
  for (const auto& p : m2->named_parameters()) n2.insert(p.key());
  for (const char* n : {"pos_embed.weight", "layers.0.attn.q_norm.alpha", "layers.0.attn.k_norm.weight",
                        "layers.0.attn.k_bias", "layers.0.attn.v_bias", "layers.0.attn.w_gate.weight",
                        "layers.0.attn_out_norm.bias", "layers.0.ffn_out_norm.weight", "final_norm.alpha"}) {
    INFO(n);
    CHECK(n2.count(n));
  }
  CHECK(!n2.count("lm_head.weight"));

  o.attention.variant = "sink_token";
  o.attention.gate.kind = "position";
  LanguageModel m3(o);
  auto p3 = m3->named_parameters();
  REQUIRE(p3.find("sink_token") != nullptr);
  REQUIRE(p3.find("gate_pos_embed.weight") != nullptr);
  CHECK(p3["gate_pos_embed.weight"].size(0) == o.max_seq_len + 1);
  CHECK(p3["pos_embed.weight"].size(0) == o.max_seq_len + 1);
}

TEST_CASE("weight decay: matrices and embeddings only", "[modules][model]") {
  auto o = tiny();
  o.norm.type = "dyt";
  o.norm.qk_norm = true;
  o.attention.variant = "kv_bias";
  o.attention.gate.kind = "static";
  LanguageModel m(o);
  for (const auto& p : m->named_parameters()) {
    const auto& n = p.key();
    bool expect = n.find("norm") == std::string::npos && n.find("_bias") == std::string::npos &&
                  n.find("gate_logit") == std::string::npos;
    INFO(n);
    CHECK(LanguageModelImpl::decays(n, p.value()) == expect);
  }
}

TEST_CASE("initialisation: seeded, normal(0, std), scaled output projections", "[modules][model][init]") {
  auto o = tiny();
  o.d_model = 64;
  o.n_layers = 4;
  o.n_heads = 4;
  o.head_dim = 16;
  o.vocab = 64;
  o.init.std = 0.02;
  at::manual_seed(3);
  LanguageModel a(o);
  at::manual_seed(3);
  LanguageModel b(o);
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& p : pa) CHECK(at::equal(p.value(), pb[p.key()]));
  CHECK(pa["layers.0.attn.wq.weight"].std().item<double>() == Approx(0.02).epsilon(0.1));
  CHECK(pa["embed.weight"].std().item<double>() == Approx(0.02).epsilon(0.1));
  double scaled = 0.02 / std::sqrt(8.0);
  CHECK(pa["layers.0.attn.wo.weight"].std().item<double>() == Approx(scaled).epsilon(0.1));
  CHECK(pa["layers.3.ffn.w_down.weight"].std().item<double>() == Approx(scaled).epsilon(0.1));
  CHECK(pa["layers.3.ffn.w_up.weight"].std().item<double>() == Approx(0.02).epsilon(0.1));
  CHECK(pa["final_norm.weight"].eq(1).all().item<bool>());
}

TEST_CASE("init.by_name: variants share every equal-named parameter; values keyed by seed", "[modules][model][init]") {
  auto base = tiny();
  base.d_model = 32;
  base.n_layers = 2;
  base.vocab = 48;
  base.init.by_name = true;
  auto build = [](ModelOptions o, uint64_t seed) {
    at::manual_seed(seed);
    return LanguageModel(o);
  };
  auto sandwich = base;
  sandwich.norm.placement = "sandwich";
  auto gated = base;
  gated.attention.gate.kind = "conditional";
  auto pre = build(base, 5);
  auto pre_params = pre->named_parameters();
  for (const auto& other : {sandwich, gated}) {
    auto m = build(other, 5);
    int64_t shared = 0, extra = 0;
    for (const auto& p : m->named_parameters()) {
      if (!pre_params.contains(p.key())) {
        ++extra;
        continue;
      }
      INFO(p.key());
      REQUIRE(p.value().sizes() == pre_params[p.key()].sizes());
      CHECK(at::equal(p.value(), pre_params[p.key()]));
      ++shared;
    }
    CHECK(shared >= 10);
    CHECK(extra > 0);  // the variant does add parameters, built before later layers' matrices
  }
  // Keyed by the seed: another seed gives other values, the same seed the same ones.
  auto again = build(base, 5), other_seed = build(base, 6);
  CHECK(at::equal(again->named_parameters()["layers.1.attn.wq.weight"], pre_params["layers.1.attn.wq.weight"]));
  CHECK(!at::equal(other_seed->named_parameters()["layers.1.attn.wq.weight"], pre_params["layers.1.attn.wq.weight"]));
  // Still normal(0, std) with each module's std, and constant inits stay constant.
  CHECK(pre_params["embed.weight"].std().item<double>() == Approx(base.init.std).epsilon(0.15));
  CHECK(pre_params["layers.1.attn.wo.weight"].std().item<double>() ==
        Approx(base.init.std / std::sqrt(4.0)).epsilon(0.15));
  CHECK(pre_params["final_norm.weight"].eq(1).all().item<bool>());
  // Without by_name, the gate shifts the default stream: layer 1's query weights differ.
  auto plain = base, plain_gated = gated;
  plain.init.by_name = plain_gated.init.by_name = false;
  CHECK(!at::equal(build(plain, 5)->named_parameters()["layers.1.attn.wq.weight"],
                   build(plain_gated, 5)->named_parameters()["layers.1.attn.wq.weight"]));
}

TEST_CASE("too-long sequences are refused; summary reports the closed-form count", "[modules][model]") {
  auto o = tiny();
  LanguageModel m(o);
  CHECK_THROWS_AS(m->forward(at::zeros({1, o.max_seq_len + 1}, at::kLong)), ablate::UserError);
  auto s = model_summary(o);
  auto n = std::to_string(parameter_count(o));
  CHECK(s.find("total " + n + " parameters (closed form: " + n + ")") != std::string::npos);
  CHECK(s.find("layers.0.attn.wq.weight") != std::string::npos);
  CHECK(effective_ffn_hidden(o) == 64);
  o.ffn.type = "linear";
  CHECK(effective_ffn_hidden(o) == 0);
  o.n_kv_heads = 1;
  CHECK(effective_kv_heads(o) == 1);
}
