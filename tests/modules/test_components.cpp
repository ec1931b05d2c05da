// Each registered component against an independent closed form written here with plain tensor
// ops, and its gradients against finite differences (double precision, tiny shapes). Tests loop
// over the registries' names(): a new variant fails here until it gets a reference.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <torch/nn/module.h>

#include <cmath>
#include <map>

#include "modules/components.h"
#include "tests/modules/helpers.h"

using namespace ablate::modules;
using namespace ablate::modules::testing;

TEST_CASE("norms match their formulas and finite differences", "[modules][norm]") {
  at::manual_seed(1);
  const int64_t D = 6;
  NormOptions no;
  no.eps = 1e-5;
  using Ref = std::function<at::Tensor(torch::nn::Module&, const at::Tensor&)>;
  std::map<std::string, Ref> refs{
      {"rmsnorm",
       [&](torch::nn::Module& m, const at::Tensor& x) {
         return x / (x * x).mean(-1, true).add(no.eps).sqrt() * param(m, "weight");
       }},
      {"layernorm",
       [&](torch::nn::Module& m, const at::Tensor& x) {
         auto c = x - x.mean(-1, true);
         return c / (c * c).mean(-1, true).add(no.eps).sqrt() * param(m, "weight") + param(m, "bias");
       }},
      {"dyt",
       [&](torch::nn::Module& m, const at::Tensor& x) {
         return param(m, "weight") * at::tanh(param(m, "alpha") * x) + param(m, "bias");
       }},
  };
  for (const auto& name : norm_type_names()) {
    INFO("norm " << name);
    REQUIRE(refs.count(name));
    const auto& f = norm_registry().get(name);
    auto norm = f.create(D, no);
    int64_t count = 0;
    for (const auto& p : norm->parameters()) count += p.numel();
    CHECK(count == f.parameters(D));
    norm->to(at::kDouble);
    randomize(*norm);
    auto x = at::randn({2, 3, D}, at::kDouble).mul(3).requires_grad_(true);
    CHECK(close(norm->forward(x), refs[name](*norm, x), 1e-10));
    auto inputs = norm->parameters();
    inputs.push_back(x);
    check_gradients([&] { return norm->forward(x); }, inputs);
  }
  // Initial values: gains 1, biases 0, dyt alpha = dyt_alpha.
  no.dyt_alpha = 0.7;
  auto dyt = norm_registry().get("dyt").create(D, no);
  CHECK(param(*dyt, "alpha").item<double>() == Approx(0.7));
  CHECK(param(*dyt, "weight").eq(1).all().item<bool>());
  CHECK(param(*dyt, "bias").eq(0).all().item<bool>());
}

TEST_CASE("placements are recipes: pre and sandwich end with a final norm, post does not", "[modules][norm]") {
  for (const auto& name : norm_placement_names()) {
    const auto& r = placement_registry().get(name);
    INFO("placement " << name);
    CHECK(!(r.norm_input && r.norm_after_add));
  }
  CHECK(placement_registry().get("pre").final_norm);
  CHECK(placement_registry().get("sandwich").final_norm);
  CHECK(placement_registry().get("sandwich").norm_output);
  CHECK(!placement_registry().get("post").final_norm);
  CHECK(placement_registry().get("post").norm_after_add);
  CHECK(placement_registry().get("none").norms_per_sublayer() == 0);
}

TEST_CASE("FFNs match their formulas and finite differences", "[modules][ffn]") {
  at::manual_seed(2);
  const int64_t C = 5, Hd = 7;
  auto silu = [](const at::Tensor& z) { return z / (1 + at::exp(-z)); };
  auto gelu = [](const at::Tensor& z) { return 0.5 * z * (1 + at::erf(z / std::sqrt(2.0))); };
  auto lin = [](torch::nn::Module& m, const std::string& n, const at::Tensor& x) {
    return at::matmul(x, param(m, n + ".weight").t());
  };
  using Ref = std::function<at::Tensor(torch::nn::Module&, const at::Tensor&)>;
  std::map<std::string, Ref> refs{
      {"swiglu",
       [&](torch::nn::Module& m, const at::Tensor& x) {
         return at::matmul(silu(lin(m, "w_gate", x)) * lin(m, "w_up", x), param(m, "w_down.weight").t());
       }},
      {"gelu",
       [&](torch::nn::Module& m, const at::Tensor& x) {
         return at::matmul(gelu(lin(m, "w_up", x)), param(m, "w_down.weight").t());
       }},
      {"linear", [&](torch::nn::Module& m, const at::Tensor& x) { return lin(m, "w", x); }},
      {"none", nullptr},
  };
  for (const auto& name : ffn_type_names()) {
    INFO("ffn " << name);
    REQUIRE(refs.count(name));
    const auto& f = ffn_registry().get(name);
    auto ffn = f.create(C, Hd, 0.1, 0.05);
    if (!f.present) {
      CHECK(!ffn);
      CHECK(f.parameters(C, Hd) == 0);
      continue;
    }
    int64_t count = 0;
    for (const auto& p : ffn->parameters()) count += p.numel();
    CHECK(count == f.parameters(C, Hd));
    ffn->to(at::kDouble);
    randomize(*ffn);
    auto x = at::randn({2, 3, C}, at::kDouble).requires_grad_(true);
    CHECK(close(ffn->forward(x), refs[name](*ffn, x), 1e-10));
    auto inputs = ffn->parameters();
    inputs.push_back(x);
    check_gradients([&] { return ffn->forward(x); }, inputs);
  }
  CHECK(ffn_registry().get("swiglu").default_hidden(64) == 192);  // ceil(8·64/3) = 171 → 192
  CHECK(ffn_registry().get("gelu").default_hidden(64) == 256);
}

TEST_CASE("positions match their formulas and finite differences", "[modules][position]") {
  at::manual_seed(3);
  ModelOptions o = tiny();
  o.position.base = 50.0;
  const int64_t S = 5, E = 6, C = o.d_model;
  using Ref = std::function<std::pair<at::Tensor, at::Tensor>(torch::nn::Module&, const at::Tensor&, const at::Tensor&)>;
  // returns (embed(x), rotate(q))
  std::map<std::string, Ref> refs{
      {"rope",
       [&](torch::nn::Module&, const at::Tensor& x, const at::Tensor& q) {
         auto out = at::zeros_like(q);
         for (int64_t s = 0; s < S; ++s)
           for (int64_t i = 0; i < E / 2; ++i) {
             double a = double(s) * std::pow(o.position.base, -2.0 * double(i) / double(E));
             auto x1 = q.select(2, s).select(-1, i), x2 = q.select(2, s).select(-1, i + E / 2);
             out.select(2, s).select(-1, i).copy_(x1 * std::cos(a) - x2 * std::sin(a));
             out.select(2, s).select(-1, i + E / 2).copy_(x2 * std::cos(a) + x1 * std::sin(a));
           }
         return std::make_pair(x, out);
       }},
      {"learned",
       [&](torch::nn::Module& m, const at::Tensor& x, const at::Tensor& q) {
         return std::make_pair(x + param(m, "weight").narrow(0, 0, S).unsqueeze(0), q);
       }},
      {"none", [&](torch::nn::Module&, const at::Tensor& x, const at::Tensor& q) { return std::make_pair(x, q); }},
  };
  for (const auto& name : position_type_names()) {
    INFO("position " << name);
    REQUIRE(refs.count(name));
    const auto& f = position_registry().get(name);
    auto pos = f.create(o, 9);
    int64_t count = 0;
    for (const auto& p : pos->parameters()) count += p.numel();
    CHECK(count == f.parameters(C, 9));
    pos->to(at::kDouble);
    auto x = at::randn({2, S, C}, at::kDouble).requires_grad_(true);
    auto q = at::randn({2, 3, S, E}, at::kDouble).requires_grad_(true);
    auto [ex, rq] = refs[name](*pos, x.detach(), q.detach());
    CHECK(close(pos->embed(x), ex, 1e-10));
    CHECK(close(pos->rotate(q), rq, 1e-10));
    auto inputs = pos->parameters();
    inputs.push_back(x);
    check_gradients([&] { return pos->embed(x); }, inputs);
    check_gradients([&] { return pos->rotate(q); }, {q});
  }
}

namespace {

// The attention reference: row by row over queries s, keys 0..s plus the variant's extras.
// Returns out (B, H, S, E) and probabilities in the probe layout (B, H, S, K).
struct AttnRef {
  at::Tensor out, probs;
};

}  // namespace

TEST_CASE("attention variants match their formulas, fast == explicit, finite differences", "[modules][attention]") {
  at::manual_seed(4);
  const int64_t B = 2, H = 4, G = 2, S = 5, E = 4;
  AttentionOptions ao;
  ao.sigmoid_bias = -0.7;
  auto row_logits = [&](const at::Tensor& q, const at::Tensor& k, int64_t s) {  // (B, H, s+1)
    auto kk = repeat_kv(k, H).narrow(2, 0, s + 1);
    return at::matmul(q.narrow(2, s, 1), kk.transpose(-2, -1)).squeeze(2) / std::sqrt(double(E));
  };
  auto rows = [&](const at::Tensor& v, int64_t s) { return repeat_kv(v, H).narrow(2, 0, s + 1); };
  // Each reference fills row s of out and probs given the per-row logits l (B, H, s+1).
  using Ref = std::function<AttnRef(torch::nn::Module&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>;
  auto softmax_ref = [&](torch::nn::Module&, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    AttnRef r{at::zeros({B, H, S, E}, at::kDouble), at::zeros({B, H, S, S}, at::kDouble)};
    for (int64_t s = 0; s < S; ++s) {
      auto e = at::exp(row_logits(q, k, s));
      auto p = e / e.sum(-1, true);
      r.probs.select(2, s).narrow(-1, 0, s + 1).copy_(p);
      r.out.select(2, s).copy_(at::matmul(p.unsqueeze(2), rows(v, s)).squeeze(2));
    }
    return r;
  };
  auto bias_ref = [&](bool with_value) {
    return [&, with_value](torch::nn::Module& m, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
      AttnRef r{at::zeros({B, H, S, E}, at::kDouble), at::zeros({B, H, S, S + 1}, at::kDouble)};
      auto kb = repeat_kv(param(m, "k_bias").view({1, G, 1, E}).expand({B, G, 1, E}), H);  // (B, H, 1, E)
      auto vb = with_value ? repeat_kv(param(m, "v_bias").view({1, G, 1, E}).expand({B, G, 1, E}), H)
                           : at::zeros({B, H, 1, E}, at::kDouble);
      auto lb = at::matmul(q, kb.transpose(-2, -1)).squeeze(-1) / std::sqrt(double(E));  // (B, H, S)
      for (int64_t s = 0; s < S; ++s) {
        auto e = at::exp(row_logits(q, k, s));
        auto eb = at::exp(lb.select(2, s));  // (B, H)
        auto z = e.sum(-1) + eb;
        auto p = e / z.unsqueeze(-1);
        r.probs.select(2, s).select(-1, 0).copy_(eb / z);
        r.probs.select(2, s).narrow(-1, 1, s + 1).copy_(p);
        r.out.select(2, s).copy_(at::matmul(p.unsqueeze(2), rows(v, s)).squeeze(2) +
                                 (eb / z).unsqueeze(-1) * vb.squeeze(2));
      }
      return r;
    };
  };
  std::map<std::string, Ref> refs{
      {"softmax", softmax_ref},
      {"sink_token", softmax_ref},  // the prefix is the LM's business; attention is plain softmax
      {"sigmoid",
       [&](torch::nn::Module&, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
         AttnRef r{at::zeros({B, H, S, E}, at::kDouble), at::zeros({B, H, S, S}, at::kDouble)};
         for (int64_t s = 0; s < S; ++s) {
           auto p = 1.0 / (1.0 + at::exp(-(row_logits(q, k, s) + ao.sigmoid_bias)));
           r.probs.select(2, s).narrow(-1, 0, s + 1).copy_(p);
           r.out.select(2, s).copy_(at::matmul(p.unsqueeze(2), rows(v, s)).squeeze(2));
         }
         return r;
       }},
      {"softmax1",
       [&](torch::nn::Module&, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
         AttnRef r{at::zeros({B, H, S, E}, at::kDouble), at::zeros({B, H, S, S + 1}, at::kDouble)};
         for (int64_t s = 0; s < S; ++s) {
           auto e = at::exp(row_logits(q, k, s));
           auto z = 1.0 + e.sum(-1, true);
           r.probs.select(2, s).narrow(-1, 0, s + 1).copy_(e / z);
           r.probs.select(2, s).select(-1, S).copy_(1.0 / z.squeeze(-1));  // the zero key, last
           r.out.select(2, s).copy_(at::matmul((e / z).unsqueeze(2), rows(v, s)).squeeze(2));
         }
         return r;
       }},
      {"k_bias", bias_ref(false)},
      {"kv_bias", bias_ref(true)},
  };
  for (const auto& name : attention_variant_names()) {
    INFO("attention " << name);
    REQUIRE(refs.count(name));
    auto kernel = attention_registry().get(name).create(ao);
    auto host = std::make_shared<torch::nn::Module>();
    kernel->build(*host, G, E, 0.5);
    int64_t count = 0;
    for (const auto& p : host->parameters()) count += p.numel();
    CHECK(count == kernel->parameters(G, E));
    host->to(at::kDouble);  // parameters keep their identity: kernels hold handles to them
    randomize(*host);
    auto q = at::randn({B, H, S, E}, at::kDouble).requires_grad_(true);
    auto k = at::randn({B, G, S, E}, at::kDouble).requires_grad_(true);
    auto v = at::randn({B, G, S, E}, at::kDouble).requires_grad_(true);
    auto ref = refs[name](*host, q.detach(), k.detach(), v.detach());
    auto ex = explicit_attention(*kernel, q, k, v);
    CHECK(close(ex.out, ref.out, 1e-10));
    CHECK(close(ex.probabilities, ref.probs, 1e-10));
    CHECK(ex.keys.k.size(2) == ref.probs.size(3));
    CHECK(close(kernel->fast(q, k, v), ref.out, 1e-10));
    auto inputs = host->parameters();
    inputs.insert(inputs.end(), {q, k, v});
    check_gradients([&] { return kernel->fast(q, k, v); }, inputs);
    check_gradients([&] { return explicit_attention(*kernel, q, k, v).out; }, inputs);
  }
}

TEST_CASE("gates match their formulas and finite differences", "[modules][gate]") {
  at::manual_seed(5);
  const int64_t C = 6, Bt = 2, S = 3, H = 2, E = 4;
  struct Spec {
    GateSource source;
    bool gated;
  };
  std::map<std::string, Spec> specs{
      {"none", {GateSource::none, false}},
      {"conditional", {GateSource::normalized_input, true}},
      {"static", {GateSource::none, true}},
      {"position", {GateSource::position_embedding, true}},
      {"token", {GateSource::token_embedding, true}},
  };
  std::map<std::string, int64_t> widths{{"headwise", 1}, {"elementwise", E}};
  for (const auto& gran : gate_granularity_names()) {
    REQUIRE(widths.count(gran));
    CHECK(gate_granularity_registry().get(gran).per_head(E) == widths[gran]);
    for (const auto& kind : gate_kind_names()) {
      INFO("gate " << kind << " " << gran);
      REQUIRE(specs.count(kind));
      int64_t n_gate = H * widths[gran];
      auto gate = gate_kind_registry().get(kind).create();
      CHECK(gate->source() == specs[kind].source);
      auto host = std::make_shared<torch::nn::Module>();
      gate->build(*host, C, n_gate, 0.5);
      int64_t count = 0;
      for (const auto& p : host->parameters()) count += p.numel();
      CHECK(count == gate->parameters(C, n_gate));
      host->to(at::kDouble);
      randomize(*host);
      auto src = at::randn({Bt, S, C}, at::kDouble).requires_grad_(true);
      auto g = gate->gate(src);
      if (!specs[kind].gated) {
        CHECK(!g.defined());
        continue;
      }
      at::Tensor ref = specs[kind].source == GateSource::none
                           ? 1.0 / (1.0 + at::exp(-param(*host, "gate_logit")))
                           : 1.0 / (1.0 + at::exp(-at::matmul(src.detach(), param(*host, "w_gate.weight").t())));
      CHECK(at::allclose(g, ref.expand_as(g), 1e-10, 1e-10));
      CHECK(g.size(-1) == n_gate);
      auto inputs = host->parameters();
      if (specs[kind].source != GateSource::none) inputs.push_back(src);
      check_gradients([&] { return gate->gate(src); }, inputs);
    }
  }
}

TEST_CASE("unknown variant names list the known ones", "[modules][registry]") {
  try {
    norm_registry().get("batchnorm");
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("rmsnorm, layernorm, dyt") != std::string::npos);
  }
  CHECK(attention_variant_names().size() == 6);
}
