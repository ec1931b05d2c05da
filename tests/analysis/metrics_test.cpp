// Each metric on hand-built inputs with a known answer (docs/metrics.md).
#include "analysis/metrics.h"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <cmath>

using namespace ablate::analysis;

namespace {

// Residual stream of `blocks` + 1 tensors (B, S, C): every entry ±0.5, and a spike at position 0
// in channels 3 (value `a`) and 7 (value 0.8·a) where spiking[b] is true.
std::vector<at::Tensor> planted_stream(const std::vector<bool>& spiking, double a) {
  const int64_t B = 2, S = 8, C = 16;
  std::vector<at::Tensor> out;
  for (bool spike : spiking) {
    at::Tensor h = at::full({B, S, C}, 0.5, at::kFloat);
    h.index_put_({at::indexing::Slice(), at::indexing::Slice(), at::indexing::Slice(0, C, 2)}, -0.5);
    if (spike) {
      h.index_put_({at::indexing::Slice(), 0, 3}, a);
      h.index_put_({at::indexing::Slice(), 0, 7}, -0.8 * a);
    }
    out.push_back(h);
  }
  return out;
}

// Causal (Q, Q) map: row 0 all on key 0; row t >= 1 puts `w` on key 0, the rest uniform on 1..t.
at::Tensor sink_uniform(int64_t Q, double w) {
  at::Tensor a = at::zeros({Q, Q}, at::kDouble);
  a[0][0] = 1.0;
  for (int64_t t = 1; t < Q; ++t) {
    a[t][0] = w;
    for (int64_t s = 1; s <= t; ++s) a[t][s] = (1.0 - w) / static_cast<double>(t);
  }
  return a;
}

// Row t >= 1: `w` on key 0, the rest on the diagonal (distance 0).
at::Tensor sink_diagonal(int64_t Q, double w) {
  at::Tensor a = at::zeros({Q, Q}, at::kDouble);
  a[0][0] = 1.0;
  for (int64_t t = 1; t < Q; ++t) {
    a[t][0] = w;
    a[t][t] = 1.0 - w;
  }
  return a;
}

}  // namespace

TEST_CASE("spike profile finds a planted two-channel spike at position 0", "[metrics]") {
  SpikeAccumulator acc;  // massive: > 100 and >= 1000 x median
  auto stream = planted_stream({false, false, true, true, false}, 1000.0);
  acc.add(stream);
  const SpikeProfile p = acc.finish();
  REQUIRE(p.sequences == 2);
  REQUIRE(p.blocks.size() == 5);
  CHECK(p.blocks[0].top1 == Approx(0.5));
  CHECK(p.blocks[2].top1 == Approx(1000.0));
  CHECK(p.blocks[2].top3 == Approx(0.5));  // third largest after 1000 and 800
  CHECK(p.blocks[2].median == Approx(0.5));
  CHECK(p.blocks[2].ratio == Approx(2000.0));
  CHECK(p.blocks[2].massive == Approx(2.0));  // 1000 and 800: > 100 and >= 1000 x 0.5
  CHECK(p.spike_magnitude == Approx(1000.0));
  CHECK(p.peak_block == 2);
  CHECK(p.massive_total == 8);  // 2 sequences x 2 blocks x 2 channels
  REQUIRE(p.massive_channels.size() == 2);
  CHECK(p.massive_channels.at(3) == 4);
  CHECK(p.massive_channels.at(7) == 4);
  REQUIRE(p.massive_positions.size() == 1);
  CHECK(p.massive_positions.at(0) == 8);
  CHECK(p.step_up == 2);
  CHECK(p.step_down == 4);
  CHECK(p.step_up_delta == Approx(999.5));
  CHECK(p.step_down_delta == Approx(-999.5));
}

TEST_CASE("spike profile: both channels massive with a lower ratio, accumulated over batches",
          "[metrics]") {
  SpikeOptions o;
  o.massive_ratio = 100.0;
  SpikeAccumulator acc(o);
  auto stream = planted_stream({false, true, true, false, false}, 400.0);
  acc.add(stream);
  acc.add(stream);
  const SpikeProfile p = acc.finish();
  CHECK(p.sequences == 4);
  CHECK(p.blocks[1].massive == Approx(2.0));  // 400 and 320 both > 100 and >= 50
  CHECK(p.spike_channels == std::vector<int64_t>{3, 7});
  CHECK(p.massive_positions.at(0) == 16);
  CHECK(p.step_up == 1);
  CHECK(p.step_down == 3);
}

TEST_CASE("spike channels fall back to the largest channels without massive entries", "[metrics]") {
  SpikeAccumulator acc;
  acc.add(planted_stream({false, true, false}, 20.0));  // 20 < 100: never massive
  const SpikeProfile p = acc.finish();
  CHECK(p.massive_total == 0);
  CHECK(p.spike_channels == std::vector<int64_t>{3, 7});  // 16 >= 0.5 x 20
  CHECK(p.step_up == 1);
  CHECK(p.step_down == 2);
  CHECK(p.spike_magnitude == Approx(20.0));
}

TEST_CASE("Sink^eps share form: unnormalised rows renormalised over stream keys", "[metrics]") {
  const int64_t Q = 16, B = 2, H = 5;
  SinkAccumulator acc({/*epsilon=*/0.3, /*max_k=*/1}, /*layers=*/1);
  // head 0: a softmax-like row (sums to 1): the share equals alpha_1.
  // heads 1, 4: sigmoid-like flat rows, 0.5 on every causal key: raw alpha_1 0.5 > 0.3, yet key
  //         0's share of row t is 1 / (t + 1), mean H_16 / 16 = 0.21 < 0.3.
  // head 2: sigmoid-like rows that are small but put 4x the weight on key 0: raw alpha_1 0.08,
  //         share mean(4 / (4 + t)) = 0.43 > 0.3.
  // head 3: 0.1 on key 0 and 0.9 on an extra key after the stream (softmax1's zero key), which
  //         the share leaves out: key 0 is the row's whole stream mass, share 1 (raw 0.1).
  at::Tensor a = at::zeros({H, Q, Q + 1}, at::kDouble);
  a[0].narrow(1, 0, Q).copy_(sink_uniform(Q, 0.6));
  double share1 = 0, share2 = 0;
  for (int64_t t = 0; t < Q; ++t) {
    for (int64_t s = 0; s <= t; ++s) {
      a[1][t][s] = 0.5;
      a[4][t][s] = 0.5;
      a[2][t][s] = s == 0 ? 0.08 : 0.02;
    }
    a[3][t][0] = 0.1;
    a[3][t][Q] = 0.9;
    share1 += 1.0 / static_cast<double>(t + 1);
    share2 += 0.08 / (0.08 + 0.02 * static_cast<double>(t));
  }
  share1 /= Q;
  share2 /= Q;
  REQUIRE(share1 == Approx(0.2113).epsilon(1e-3));
  REQUIRE(share2 == Approx(0.4286).epsilon(1e-3));
  acc.add_layer(0, a.unsqueeze(0).expand({B, H, Q, Q + 1}).to(at::kFloat));
  const SinkReport r = acc.finish();
  const at::Tensor alpha = r.alpha[0][0], share = r.alpha1_share[0];
  CHECK(alpha[0].item<double>() == Approx((1.0 + 0.6 * (Q - 1)) / Q));
  CHECK(share[0].item<double>() == Approx(alpha[0].item<double>()));
  CHECK(alpha[1].item<double>() == Approx(0.5));
  CHECK(share[1].item<double>() == Approx(share1));
  CHECK(share[4].item<double>() == Approx(share1));
  CHECK(alpha[2].item<double>() == Approx(0.08));
  CHECK(share[2].item<double>() == Approx(share2));
  CHECK(alpha[3].item<double>() == Approx(0.1));
  CHECK(share[3].item<double>() == Approx(1.0));
  // Raw Sink^0.3: heads 0, 1, 4 (3 of 5); share: heads 0, 2, 3 (3 of 5) - different heads; a
  // share computed from the raw alpha would count 0, 1, 4.
  CHECK(r.sink_eps[0] == Approx(0.6));
  CHECK(r.sink_eps_share == Approx(0.6));
  REQUIRE(r.sink_eps_share_per_layer.size() == 1);
  CHECK(r.sink_eps_share_per_layer[0] == Approx(0.6));
  const at::Tensor above = (r.alpha1_share > 0.3).to(at::kLong).flatten();
  CHECK(above.equal(at::tensor({1, 0, 1, 1, 0}, at::kLong)));
}

TEST_CASE("Sink^eps share form: a row without stream mass counts 0", "[metrics]") {
  const int64_t Q = 4;
  SinkAccumulator acc({/*epsilon=*/0.3, /*max_k=*/1}, /*layers=*/1);
  at::Tensor a = at::zeros({1, 1, Q, Q + 1}, at::kDouble);
  for (int64_t t = 0; t < Q; ++t) a[0][0][t][Q] = 1.0;  // all on the extra key
  a[0][0][Q - 1][0] = 1e-20;  // a tiny row keeps its share (1: key 0 is all its stream mass)
  acc.add_layer(0, a);
  const SinkReport r = acc.finish();
  CHECK(r.alpha1_share[0][0].item<double>() == Approx(1.0 / Q));
  CHECK(r.sink_eps_share == Approx(0.0));
}

TEST_CASE("Sink^eps: exactly 40% of heads above epsilon; mass form", "[metrics]") {
  const int64_t Q = 8, B = 3;
  SinkAccumulator acc({/*epsilon=*/0.3, /*max_k=*/2}, /*layers=*/2);
  // layer 0: heads 0..2 sink (0.8), 3..4 not (0.1); layer 1: head 0 sink only.
  for (int64_t l = 0; l < 2; ++l) {
    std::vector<at::Tensor> heads;
    for (int64_t h = 0; h < 5; ++h) {
      const bool sink = l == 0 ? h < 3 : h == 0;
      heads.push_back(sink_uniform(Q, sink ? 0.8 : 0.1));
    }
    acc.add_layer(l, at::stack(heads).unsqueeze(0).expand({B, 5, Q, Q}).to(at::kFloat));
  }
  const SinkReport r = acc.finish();
  CHECK(r.sequences == B);
  CHECK(r.heads == 5);
  CHECK(r.sink_eps[0] == Approx(0.4));
  CHECK(r.alpha1_share.allclose(r.alpha[0]));  // rows sum to 1: the share is alpha_1
  CHECK(r.sink_eps_share == Approx(0.4));
  CHECK(r.sink_eps_per_layer[0] == Approx(0.6));
  CHECK(r.sink_eps_per_layer[1] == Approx(0.2));
  CHECK(r.alpha[0][0][0].item<double>() == Approx((1.0 + 0.8 * 7) / 8));  // query 0 counts (Gu)
  CHECK(r.alpha[0][0][4].item<double>() == Approx((1.0 + 0.1 * 7) / 8));
  CHECK(r.mass[0][0].item<double>() == Approx(0.8));
  CHECK(r.sink_mass == Approx((4 * 0.8 + 6 * 0.1) / 10));
  CHECK(r.mass_per_layer[0] == Approx((3 * 0.8 + 2 * 0.1) / 5));
  // alpha_2: key 1, queries t >= 1: (1-w)/t averaged over t = 1..7.
  double a2 = 0;
  for (int t = 1; t < Q; ++t) a2 += 0.2 / t;
  CHECK(r.alpha[1][0][0].item<double>() == Approx(a2 / 7));
  // Non-sink heads: alpha_2 = 0.9 x H_7 / 7 = 0.333 > 0.3, so Sink_2 counts the 6 of them.
  CHECK(r.sink_eps[1] == Approx(0.6));
  CHECK_FALSE(r.bias_mass.defined());
  CHECK_FALSE(r.delimiter_alpha.defined());
}

TEST_CASE("locality: diagonal heads have distance 0; correlation with alpha_1", "[metrics]") {
  const int64_t Q = 6;
  SinkAccumulator acc({}, 1);
  // Heads 0, 2: sink 0.8 + diagonal (distance 0); heads 1, 3: sink 0.1 + uniform.
  at::Tensor a = at::stack({sink_diagonal(Q, 0.8), sink_uniform(Q, 0.1), sink_diagonal(Q, 0.8),
                            sink_uniform(Q, 0.1)}).unsqueeze(0);
  acc.add_layer(0, a);
  const SinkReport r = acc.finish();
  CHECK(r.distance[0][0].item<double>() == Approx(0.0).margin(1e-12));
  // uniform over 1..t: E[t - s] = (t - 1) / 2, mean over t = 1..5 -> 1.
  CHECK(r.distance[0][1].item<double>() == Approx(1.0));
  CHECK(r.locality_alpha_corr == Approx(-1.0));

  // Sink plus previous token: distance 0 at t = 1 (only key 1 = t), 1 afterwards.
  at::Tensor prev = at::zeros({Q, Q}, at::kDouble);
  prev[0][0] = 1.0;
  prev[1][0] = 0.9;
  prev[1][1] = 0.1;
  for (int64_t t = 2; t < Q; ++t) prev[t][0] = 0.9, prev[t][t - 1] = 0.1;
  SinkAccumulator acc2({}, 1);
  acc2.add_layer(0, prev.view({1, 1, Q, Q}));
  CHECK(acc2.finish().distance[0][0].item<double>() == Approx(4.0 / 5.0));
}

TEST_CASE("first-delimiter alpha and learned key bias", "[metrics]") {
  const int64_t Q = 6, d = 3;
  at::Tensor a = at::zeros({Q, Q + 1}, at::kDouble);  // key 0 = learned bias, keys 1.. = positions
  for (int64_t t = 0; t < Q; ++t) {
    a[t][0] = 0.5;
    if (t < d) {
      for (int64_t s = 0; s <= t; ++s) a[t][1 + s] = 0.5 / static_cast<double>(t + 1);
    } else {
      a[t][1 + d] = 0.3;
      for (int64_t s = 0; s <= t; ++s) {
        if (s != d) a[t][1 + s] = 0.2 / static_cast<double>(t);
      }
    }
  }
  SinkAccumulator acc({}, 1);
  at::Tensor batch = at::stack({a, a}).unsqueeze(1);  // (2, 1, Q, Q+1)
  acc.add_layer(0, batch, /*key_offset=*/1, at::tensor({d, int64_t{-1}}, at::kLong));
  const SinkReport r = acc.finish();
  REQUIRE(r.delimiter_alpha.defined());
  CHECK(r.delimiter_sequences == 1);
  CHECK(r.delimiter_alpha[0][0].item<double>() == Approx(0.3));
  CHECK(r.delimiter_sink_eps == Approx(0.0));  // 0.3 is not > 0.3
  REQUIRE(r.bias_mass.defined());
  CHECK(r.bias_mass[0][0].item<double>() == Approx(0.5));
  // Mass form reads position 0 (key 1), not the bias: t = 1, 2: 0.25, 0.5/3; t >= 3: 0.2/t.
  const double m = (0.25 + 0.5 / 3 + 0.2 / 3 + 0.2 / 4 + 0.2 / 5) / 5;
  CHECK(r.sink_mass == Approx(m));
  // alpha_1 reads position 0 (key 1) from query 0 on; the share divides each row by its stream
  // mass 0.5 (the bias key's 0.5 left out): twice alpha_1.
  CHECK(r.alpha[0][0][0].item<double>() == Approx((0.5 + 0.25 + 0.5 / 3 + 0.2 / 3 + 0.2 / 4 + 0.2 / 5) / 6));
  CHECK(r.alpha1_share[0][0].item<double>() == Approx(2 * r.alpha[0][0][0].item<double>()));
}

TEST_CASE("effective rank", "[metrics]") {
  at::manual_seed(0);
  const at::Tensor q = std::get<0>(at::linalg_qr(at::randn({10, 10}, at::kDouble)));
  const at::Tensor v = std::get<0>(at::linalg_qr(at::randn({4, 4}, at::kDouble)));
  // rows = U diag(s) V^T with chosen singular values.
  auto with = [&](std::vector<double> s) {
    const int64_t r = static_cast<int64_t>(s.size());
    return q.narrow(1, 0, r).matmul(at::diag(at::tensor(s, at::kDouble))).matmul(v.narrow(1, 0, r).t());
  };
  CHECK(effective_rank(with({2.0, 2.0, 2.0})) == Approx(3.0));
  CHECK(effective_rank(with({5.0})) == Approx(1.0).epsilon(1e-6));
  const double h = -(0.75 * std::log(0.75) + 0.25 * std::log(0.25));
  CHECK(effective_rank(with({3.0, 1.0})) == Approx(std::exp(h)));
  CHECK(effective_rank(at::zeros({3, 4})) == 0.0);
}

TEST_CASE("near-constant geometry: cosine across sequences and sparsity", "[metrics]") {
  const at::Tensor rows = at::tensor({1.0, 0.0, 0.0, 1.0, 2.0, 0.0}, at::kDouble).view({3, 2});
  const at::Tensor seq = at::tensor({0, 0, 1}, at::kLong);
  CHECK(cross_sequence_cosine(rows, seq) == Approx(0.5));  // pairs (0,2) = 1, (1,2) = 0
  CHECK(std::isnan(cross_sequence_cosine(rows, at::tensor({0, 0, 0}, at::kLong))));
  CHECK(small_fraction(at::tensor({0.001, 0.5, -0.005, 2.0}, at::kDouble)) == Approx(0.5));

  // A spike vector normalises to a sparse, near-constant direction.
  at::Tensor h = at::full({2, 64}, 0.01, at::kDouble);
  h[0][5] = 1000.0;
  h[1][5] = 3000.0;
  h[1][6] = 0.02;
  const at::Tensor n = rms_normalize(h);
  CHECK(n[0][5].item<double>() == Approx(8.0).epsilon(1e-4));  // sqrt(64)
  CHECK(small_fraction(n) == Approx(126.0 / 128.0));
  CHECK(cross_sequence_cosine(n, at::tensor({0, 1}, at::kLong)) == Approx(1.0).epsilon(1e-6));
}

TEST_CASE("pearson", "[metrics]") {
  CHECK(pearson(at::tensor({1.0, 2.0, 3.0}), at::tensor({2.0, 4.0, 6.0})) == Approx(1.0));
  CHECK(pearson(at::tensor({1.0, 2.0, 3.0}), at::tensor({1.0, 0.0, -1.0})) == Approx(-1.0));
  CHECK(std::isnan(pearson(at::tensor({1.0, 1.0}), at::tensor({1.0, 2.0}))));
}

TEST_CASE("quadratic amplifier norms match the direct computation", "[metrics]") {
  at::manual_seed(1);
  const int64_t F = 7, C = 5;
  const at::Tensor g = at::randn({F, C}, at::kDouble), u = at::randn({F, C}, at::kDouble);
  const at::Tensor d = at::randn({C, F}, at::kDouble);
  const at::Tensor got = quadratic_amplifier_norms(g.to(at::kFloat), u.to(at::kFloat), d.to(at::kFloat));
  REQUIRE(got.size(0) == C);
  for (int64_t k = 0; k < C; ++k) {
    const at::Tensor m = g.t().matmul(at::diag(d[k])).matmul(u);  // (C, C)
    const double want = ((m + m.t()) * 0.5).norm().item<double>();
    CHECK(got[k].item<double>() == Approx(want).epsilon(1e-5));
  }
}

TEST_CASE("spike-token ubiquity", "[metrics]") {
  const at::Tensor top1 = at::tensor({200.0, 50.0, 5000.0, 300.0});
  const at::Tensor median = at::tensor({0.1, 0.01, 10.0, 0.2});
  CHECK(spike_ubiquity(top1, median, 100.0, 1000.0) == Approx(0.5));
  CHECK(spike_ubiquity(at::zeros({0}), at::zeros({0}), 1.0, 1.0) == 0.0);
}
