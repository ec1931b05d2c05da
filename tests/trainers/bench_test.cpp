// `ablate bench` (trainers/bench.h): the timed step is the trainer's step (same losses), the dump
// holds what bench/reference/ replays, and the FLOP count follows docs/performance.md.
#include <catch2/catch.hpp>

#include <ATen/ATen.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "data/formats/safetensors.h"
#include "modules/model.h"
#include "src/config/config.h"
#include "trainers/bench.h"
#include "trainers/trainer.h"

using namespace ablate;
namespace fs = std::filesystem;

namespace {

const char* kBenchTiny = R"(
model: {d_model: 32, n_layers: 2, n_heads: 2, head_dim: 16, vocab: 34}
data: {source: synthetic, seq_len: 16, synthetic: {vocab: 32, val_sequences: 16}}
train:
  steps: 20
  batch: 4
  micro_batch: 2
  optimizer: {lr: 0.01, weight_decay: 0.1}
  schedule: {type: cosine, warmup: 2}
  eval: {every: 0, batches: 1}
  checkpoint: {every: 0, keep: 1}
  log: {every: 1}
device: cpu
)";

}  // namespace

TEST_CASE("bench runs the trainer's step: the same losses as train") {
  const fs::path dir = fs::temp_directory_path() / ("ablate-bench-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto loaded = config::load_text(kBenchTiny, "bench.yaml", {"train.hard_stop=3"});
  auto setup = config::to_trainer_setup(loaded, (dir / "run").string());
  trainers::train(setup);
  std::vector<double> trained;
  std::ifstream in(dir / "run" / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["split"] == "train") trained.push_back(j["loss"].get<double>());
  }
  REQUIRE(trained.size() == 3);

  trainers::BenchOptions o;
  o.warmup = 1;
  o.steps = 2;
  o.dump_path = (dir / "dump.safetensors").string();
  auto r = trainers::bench(setup, o);
  REQUIRE(r.losses.size() == 3);
  for (size_t i = 0; i < 3; ++i) CHECK(r.losses[i] == trained[i]);
  CHECK(r.tokens_per_s > 0);
  CHECK(r.tokens_per_step == 4 * 16);
  CHECK(r.mfu > 0);
  CHECK(r.host_peak_rss_bytes > 0);

  auto dump = data::load_safetensors(o.dump_path);
  std::map<std::string, at::Tensor> t(dump.tensors.begin(), dump.tensors.end());
  CHECK(t.count("embed.weight") == 1);
  CHECK(t.count("batch.5.inputs") == 1);  // 3 steps x 2 micro-batches
  CHECK(t.count("batch.6.inputs") == 0);
  CHECK(t.at("lr").numel() == 3);
  CHECK(dump.metadata.at("micro_batches_per_step") == "2");
  CHECK(nlohmann::json::parse(dump.metadata.at("model"))["ffn"]["hidden"].get<int64_t>() ==
        modules::effective_ffn_hidden(setup.model));
  fs::remove_all(dir);
}

TEST_CASE("bench FLOPs: 6 N_matmul + 12 L T H E per token") {
  modules::ModelOptions o;  // d 128, 4 layers, 4 heads x 32, vocab 256, swiglu, untied
  o.max_seq_len = 64;
  const int64_t N = modules::parameter_count(o) - o.vocab * o.d_model;  // all but embed.weight
  CHECK(trainers::matmul_parameters(o) == N);
  CHECK(trainers::flops_per_token(o, 64) == Approx(6.0 * N + 12.0 * 4 * 64 * 4 * 32));
  o.tie_embeddings = true;  // the tied table is the LM head: it counts
  CHECK(trainers::matmul_parameters(o) == modules::parameter_count(o));
  CHECK(trainers::known_gpu_peak("NVIDIA H200") == 989e12);
  CHECK(trainers::known_gpu_peak("NVIDIA A100-SXM4-80GB") == 312e12);
  CHECK(trainers::known_gpu_peak("Some GPU") == 0);
}

TEST_CASE("bench --trace: self time subtracts nested operators, per thread") {
  // thread 1: a [0, 100) holds b [10, 40) which holds c [20, 30); a second b [50, 60).
  // thread 2: b [0, 1000) alone (same start times as thread 1 must not nest across threads).
  std::vector<trainers::TraceEvent> ev = {{"c", 1, 20, 10}, {"a", 1, 0, 100}, {"b", 1, 10, 30},
                                          {"b", 1, 50, 10}, {"b", 2, 0, 1000}};
  auto ops = trainers::self_times(ev);
  REQUIRE(ops.size() == 3);
  CHECK(ops[0].name == "b");  // 20 + 10 + 1000 ns
  CHECK(ops[0].calls == 3);
  CHECK(ops[0].self_s == Approx(1030e-9));
  CHECK(ops[1].name == "a");  // 100 − 30 − 10
  CHECK(ops[1].self_s == Approx(60e-9));
  CHECK(ops[2].name == "c");
  CHECK(ops[2].self_s == Approx(10e-9));

  // The whole path: a traced bench writes a Chrome trace and names the matrix products.
  const fs::path dir = fs::temp_directory_path() / ("ablate-bench-trace-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto loaded = config::load_text(kBenchTiny, "bench.yaml", {});
  auto setup = config::to_trainer_setup(loaded, (dir / "run").string());
  trainers::BenchOptions o;
  o.warmup = 1;
  o.steps = 1;
  o.trace_path = (dir / "trace.json").string();
  auto r = trainers::bench(setup, o);
  CHECK(fs::file_size(o.trace_path) > 0);
  CHECK(nlohmann::json::parse(std::ifstream(o.trace_path)).contains("traceEvents"));
  bool has_mm = false;
  for (const auto& op : r.top_ops) has_mm = has_mm || op.name == "aten::mm";
  CHECK(has_mm);
  CHECK(trainers::format_report(r).find("top operators") != std::string::npos);
  fs::remove_all(dir);
}
