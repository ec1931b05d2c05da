// The loader: determinism, variant-independence, resume, rank slicing, loss window, shards.
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include <cstdio>
#include <set>

#include "data/core/errors.h"
#include "data/loader.h"
#include "data/shards.h"
#include "data/synthetic.h"
#include "tests/data/tmpdir.h"

using namespace ablate;
using namespace ablate::data;

namespace {

bool same(const Batch& a, const Batch& b) {
  return a.inputs.equal(b.inputs) && a.targets.equal(b.targets) && a.loss_mask.equal(b.loss_mask);
}

DataOptions synthetic_options() {
  DataOptions o;
  o.source = "synthetic";
  o.seq_len = 32;
  o.seed = 11;
  return o;
}

// A corpus of documents "BOS w w w ..." with varying lengths, byte-tokenizer ids.
void write_corpus(const std::string& dir, int64_t docs, int64_t shard_tokens) {
  ShardWriter train({dir, "train", 257, shard_tokens});
  ShardWriter val({dir, "val", 257, shard_tokens});
  for (int64_t d = 0; d < docs; ++d) {
    std::vector<int32_t> doc{256};
    for (int64_t i = 0; i < 20 + (d * 37) % 90; ++i) doc.push_back(static_cast<int32_t>(mix64(static_cast<uint64_t>(d * 1000003 + i)) % 256));
    (d % 10 == 0 ? val : train).write(doc);
  }
}

}  // namespace

TEST_CASE("synthetic loader: same seed same batches, targets are shifted inputs", "[loader]") {
  Loader a(synthetic_options(), 4), b(synthetic_options(), 4);
  CHECK(a.vocab_needed() == 130);
  for (int i = 0; i < 3; ++i) {
    const Batch x = a.next(), y = b.next();
    CHECK(same(x, y));
    CHECK(x.inputs.sizes() == at::IntArrayRef({4, 32}));
    CHECK(x.inputs.scalar_type() == at::kLong);
    CHECK(x.loss_mask.scalar_type() == at::kFloat);
    CHECK(x.inputs.slice(1, 1, 32).equal(x.targets.slice(1, 0, 31)));
    CHECK((x.inputs.select(1, 0) == 128).all().item<bool>());  // BOS
  }
  auto other = synthetic_options();
  other.seed = 12;
  Loader c(other, 4);
  Loader d(synthetic_options(), 4);
  CHECK(!same(c.next(), d.next()));
  CHECK(a.order_hash(16) == b.order_hash(16));
  CHECK(a.order_hash(16) != c.order_hash(16));
}

TEST_CASE("loader state save/restore continues identically", "[loader]") {
  Loader a(synthetic_options(), 3);
  a.next();
  a.next();
  const std::string saved = a.state().to_string();
  const Batch expect1 = a.next(), expect2 = a.next();
  Loader b(synthetic_options(), 3);
  b.restore(LoaderState::from_string(saved));
  CHECK(same(b.next(), expect1));
  CHECK(same(b.next(), expect2));
  auto other = synthetic_options();
  other.seq_len = 16;
  Loader c(other, 3);
  CHECK_THROWS_AS(c.restore(LoaderState::from_string(saved)), UserError);
  CHECK_THROWS_AS(LoaderState::from_string("{\"position\": \"x\"}"), UserError);
}

TEST_CASE("2 ranks x b see what 1 rank x 2b sees", "[loader]") {
  auto check = [](const DataOptions& o) {
    Loader one(o, 4), r0(o, 2, /*rank=*/0, /*world=*/2), r1(o, 2, /*rank=*/1, /*world=*/2);
    for (int step = 0; step < 3; ++step) {
      const Batch all = one.next(), a = r0.next(), b = r1.next();
      CHECK(at::cat({a.inputs, b.inputs}).equal(all.inputs));
      CHECK(at::cat({a.targets, b.targets}).equal(all.targets));
    }
  };
  check(synthetic_options());
  test::TempDir dir;
  write_corpus(dir.path.string(), 200, 3000);
  DataOptions o;
  o.source = "shards";
  o.train = dir.path.string();
  o.seq_len = 16;
  check(o);
  o.bos = false;
  check(o);
}

TEST_CASE("loss window masks target positions min..max (1-based)", "[loader]") {
  auto o = synthetic_options();
  o.seq_len = 8;
  o.loss_window = {3, 5};
  Loader l(o, 2);
  const auto m = l.next().loss_mask;
  const auto expect = at::tensor({0.f, 0.f, 1.f, 1.f, 1.f, 0.f, 0.f, 0.f}).expand({2, 8});
  CHECK(m.equal(expect));
  o.loss_window = {};
  CHECK(Loader(o, 2).next().loss_mask.eq(1).all().item<bool>());
  o.loss_window = {0, 4};
  CHECK_THROWS_AS(Loader(o, 2), UserError);
  o.loss_window = {2, 9};
  CHECK_THROWS_AS(Loader(o, 2), UserError);
}

TEST_CASE("validation and probe data are fixed", "[loader]") {
  Loader a(synthetic_options(), 4), b(synthetic_options(), 8);
  CHECK(a.validation_size() == 256);
  a.next();
  CHECK(same(a.validation_batch(1, 16), b.validation_batch(1, 16)));
  CHECK(a.validation_batch(15, 17).inputs.size(0) == 256 - 15 * 17);
  CHECK(!a.validation_batch(0, 4).inputs.equal(Loader(synthetic_options(), 4).next().inputs));
  const auto p = a.probe_sequences(5, 40, 7);
  CHECK(p.sizes() == at::IntArrayRef({5, 40}));
  CHECK(p.equal(b.probe_sequences(5, 40, 7)));
  CHECK(!p.equal(b.probe_sequences(5, 40, 8)));
}

TEST_CASE("shard loader: windows start at BOS, epochs cover the data, crops otherwise", "[loader]") {
  test::TempDir dir;
  write_corpus(dir.path.string(), 300, 4000);
  DataOptions o;
  o.source = "shards";
  o.train = (dir / "train_*.bin");
  o.seq_len = 24;
  o.seed = 5;
  Loader l(o, 8);
  CHECK(l.vocab_needed() == 257);
  // Delimiters of the byte tokenizer: newline ! , . : ; ? as bytes, ascending.
  CHECK(l.delimiter_ids() == std::vector<int64_t>{10, 33, 44, 46, 58, 59, 63});
  const int64_t n = l.samples_per_epoch();
  REQUIRE(n > 8);
  // One epoch visits every window exactly once.
  std::set<std::vector<int64_t>> seen;
  Loader one(o, 1);
  for (int64_t i = 0; i < n; ++i) {
    const Batch b = one.next();
    CHECK(b.inputs[0][0].item<int64_t>() == 256);
    const auto* p = b.targets.data_ptr<int64_t>();
    seen.insert(std::vector<int64_t>(p, p + 24));
  }
  CHECK(static_cast<int64_t>(seen.size()) == n);
  CHECK(l.validation_size() > 0);
  CHECK(l.probe_sequences(3, 24, 1)[0][0].item<int64_t>() == 256);
  o.bos = false;
  Loader crops(o, 4);
  CHECK(crops.next().inputs.sizes() == at::IntArrayRef({4, 24}));
  CHECK(Loader(o, 4).order_hash(20) == crops.order_hash(20));
}

TEST_CASE("shard loader errors: empty corpus, missing val, no BOS", "[loader]") {
  test::TempDir dir;
  DataOptions o;
  o.source = "shards";
  o.seq_len = 8;
  o.train = dir / "train_*.bin";
  auto msg = [&] {
    try {
      Loader l(o, 1);
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(msg().find("matches no shard") != std::string::npos);
  {  // a valid shard holding no tokens: the empty corpus
    int32_t header[256] = {kShardMagicU16, 1, 0};
    std::FILE* f = std::fopen((dir / "train_000000.bin").c_str(), "wb");
    std::fwrite(header, sizeof header, 1, f);
    std::fclose(f);
  }
  const std::string empty_msg = msg();
  INFO(empty_msg);
  CHECK(empty_msg.find("empty corpus") != std::string::npos);
  {
    ShardWriter w({dir.path.string(), "train", 257, 100});
    w.write(std::vector<int32_t>(50, 3));
  }
  CHECK(msg().find("no validation shards") != std::string::npos);
  {
    ShardWriter w({dir.path.string(), "val", 257, 100});
    w.write(std::vector<int32_t>(50, 3));
  }
  CHECK(msg().find("no BOS token") != std::string::npos);  // no BOS anywhere
  o.bos = false;
  CHECK(Loader(o, 1).next().inputs.size(1) == 8);
}
