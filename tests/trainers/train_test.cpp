// The training core: exact resume (also through SIGTERM), every variant trains, checkpoints
// detect damage, resume refuses a changed model, the optimiser and schedules are right.
#include <catch2/catch.hpp>

#include <ATen/ATen.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common.h"
#include "data/core/errors.h"
#include "data/formats/atomic_dir.h"
#include "data/formats/metrics_log.h"
#include "data/formats/safetensors.h"
#include "modules/kernels.h"
#include "modules/registry.h"
#include "src/config/config.h"
#include "trainers/checkpoint.h"
#include "trainers/optimizer.h"
#include "trainers/step.h"
#include "trainers/trainer.h"

using namespace ablate;
namespace fs = std::filesystem;

namespace {

// A model small enough that a step takes milliseconds on one CPU core.
const char* kTiny = R"(
model: {d_model: 32, n_layers: 2, n_heads: 2, head_dim: 16, vocab: 34}
data: {source: synthetic, seq_len: 16, synthetic: {vocab: 32, val_sequences: 16}}
train:
  steps: 12
  batch: 4
  micro_batch: 2
  optimizer: {lr: 0.01, weight_decay: 0.1}
  schedule: {type: cosine, warmup: 3}
  eval: {every: 6, batches: 2}
  checkpoint: {every: 4, keep: 5}
  log: {every: 1}
probe: {seq_len: 16, batch: 4, train_sequences: 4}
device: cpu
)";

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("ablate-train-" + tag + "-" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string sub(const std::string& name) const { return (path / name).string(); }
};

trainers::TrainerSetup setup_for(const std::string& run_dir, const std::vector<std::string>& sets = {},
                                 const std::string& yaml = kTiny) {
  auto loaded = config::load_text(yaml, "tiny.yaml", sets);
  return config::to_trainer_setup(loaded, run_dir);
}

std::vector<double> losses(const std::string& run_dir, const std::string& split = "train") {
  std::vector<double> out;
  for (const auto& r : data::read_metrics(run_dir + "/metrics.jsonl"))
    if (r.at("split") == split) out.push_back(r.at("loss").get<double>());
  return out;
}

data::NamedTensors final_weights(const std::string& run_dir) {
  return data::load_safetensors(*trainers::find_latest_checkpoint(run_dir) + "/model.safetensors").tensors;
}

void require_identical(const data::NamedTensors& a, const data::NamedTensors& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    CHECK(a[i].first == b[i].first);
    CHECK(at::equal(a[i].second, b[i].second));
  }
}

}  // namespace

TEST_CASE("resume is exact: N steps, stop, resume to 2N equals 2N uninterrupted") {
  TempDir tmp("exact");
  auto full = setup_for(tmp.sub("full"));
  auto out = trainers::train(full);
  CHECK(out.step == 12);

  auto part = setup_for(tmp.sub("part"), {"train.hard_stop=6"});
  out = trainers::train(part);
  CHECK(out.step == 6);
  auto ckpt = trainers::find_latest_checkpoint(tmp.sub("part"));
  REQUIRE(ckpt);
  auto resumed = setup_for(tmp.sub("part"));
  resumed.resume_from = *ckpt;
  out = trainers::train(resumed);
  CHECK(out.step == 12);

  auto a = losses(tmp.sub("full")), b = losses(tmp.sub("part"));
  REQUIRE(a.size() == 12);
  CHECK(a == b);  // bitwise: doubles compared with ==
  CHECK(losses(tmp.sub("full"), "val") == losses(tmp.sub("part"), "val"));
  require_identical(final_weights(tmp.sub("full")), final_weights(tmp.sub("part")));
}

TEST_CASE("a CPU run records its arithmetic (threads, fused kernels); resuming with another one warns") {
  TempDir tmp("arith");
  auto part = setup_for(tmp.sub("part"), {"train.hard_stop=6"});
  trainers::train(part);
  auto ckpt = trainers::find_latest_checkpoint(tmp.sub("part"));
  REQUIRE(ckpt);
  const auto run = nlohmann::json::parse(test::read_text(tmp.sub("part") + "/run.json"));
  const auto state = nlohmann::json::parse(test::read_text(*ckpt + "/train_state.json"));
  for (const auto& j : {run, state}) {
    CHECK(j.value("cpu_threads", -1) == at::get_num_threads());
    REQUIRE(j.contains("fused_cpu_kernels"));
    CHECK(j["fused_cpu_kernels"].get<bool>() == modules::kernels::fused_cpu_enabled());
  }
  // The same arithmetic: no warning; the checkpoint of an older build (no fields): none either.
  CHECK(trainers::cpu_arithmetic_warning(state, trainers::cpu_arithmetic()).empty());
  CHECK(trainers::cpu_arithmetic_warning(nlohmann::json{{"step", 6}}, trainers::cpu_arithmetic()).empty());
  const auto w = trainers::cpu_arithmetic_warning({{"cpu_threads", 2}, {"fused_cpu_kernels", true}},
                                                  {{"cpu_threads", 1}, {"fused_cpu_kernels", true}});
  CHECK_THAT(w, Catch::Contains("written with 2 CPU thread(s), resumed with 1"));
  CHECK(w.find("fused") == std::string::npos);

  // Resumed with the fused kernels switched: it trains to the end and says why it is not exact.
  const bool was = modules::kernels::fused_cpu_enabled();
  modules::kernels::set_fused_cpu_enabled(!was);
  auto resumed = setup_for(tmp.sub("part"));
  resumed.resume_from = *ckpt;
  const auto out = trainers::train(resumed);
  modules::kernels::set_fused_cpu_enabled(was);
  CHECK(out.step == 12);
  CHECK_THAT(test::read_text(tmp.sub("part") + "/train.log"),
             Catch::Contains(std::string("written with the fused CPU kernels ") + (was ? "on" : "off") +
                             ", resumed with them " + (was ? "off" : "on")));
}

TEST_CASE("SIGTERM finishes the step, checkpoints, exits 0; resuming is exact") {
  TempDir tmp("sigterm");
  const std::string cfg = tmp.sub("cfg.yaml");
  std::ofstream(cfg) << kTiny;
  const std::string run = tmp.sub("run");
  const std::string bin = ABLATE_BIN_PATH;
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execl(bin.c_str(), bin.c_str(), "train", cfg.c_str(), "--run-dir", run.c_str(), "--set", "train.steps=100000",
          "--set", "train.checkpoint.every=100000", "--set", "train.eval.every=0", "--set", "train.schedule.type=constant",
          (char*)nullptr);
    _exit(127);
  }
  // Wait for a few training records, then ask it to stop.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  size_t seen = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::error_code ec;
    if (!fs::exists(run + "/metrics.jsonl", ec)) continue;
    seen = losses(run).size();
    if (seen >= 3) break;
  }
  REQUIRE(seen >= 3);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  auto ckpt = trainers::find_latest_checkpoint(run);
  REQUIRE(ckpt);
  auto state = trainers::load_checkpoint(*ckpt).train_state;
  const int64_t stopped = state.at("step").get<int64_t>();
  CHECK(stopped >= 3);
  CHECK(losses(run).size() == static_cast<size_t>(stopped));

  // Continue to stopped + 4 and compare with an uninterrupted run of the same schedule.
  const std::vector<std::string> sets{"train.steps=100000", "train.checkpoint.every=100000", "train.eval.every=0",
                                      "train.schedule.type=constant",
                                      "train.hard_stop=" + std::to_string(stopped + 4)};
  auto resumed = setup_for(run, sets);
  resumed.resume_from = *ckpt;
  trainers::train(resumed);
  auto straight = setup_for(tmp.sub("straight"), sets);
  trainers::train(straight);
  CHECK(losses(run) == losses(tmp.sub("straight")));
  require_identical(final_weights(run), final_weights(tmp.sub("straight")));
}

TEST_CASE("every registered variant trains 20 steps with a finite, falling loss") {
  TempDir tmp("variants");
  std::vector<std::vector<std::string>> variants;
  for (const auto& v : modules::attention_variant_names()) variants.push_back({"model.attention.variant=" + v});
  for (const auto& v : modules::norm_type_names()) variants.push_back({"model.norm.type=" + v});
  for (const auto& v : modules::norm_placement_names()) variants.push_back({"model.norm.placement=" + v});
  for (const auto& v : modules::ffn_type_names()) variants.push_back({"model.ffn.type=" + v});
  for (const auto& v : modules::position_type_names()) variants.push_back({"model.position.type=" + v});
  for (const auto& k : modules::gate_kind_names())
    for (const auto& g : modules::gate_granularity_names())
      variants.push_back({"model.attention.gate.kind=" + k, "model.attention.gate.granularity=" + g});
  variants.push_back({"model.norm.qk_norm=true"});
  variants.push_back({"model.n_kv_heads=1"});
  variants.push_back({"model.tie_embeddings=true"});
  int i = 0;
  for (auto sets : variants) {
    std::string label;
    for (const auto& s : sets) label += s + " ";
    INFO(label);
    sets.insert(sets.end(), {"train.steps=20", "train.eval.every=0", "train.checkpoint.every=0",
                             "train.optimizer.lr=0.01", "train.schedule.warmup=2", "train.micro_batch=0"});
    const std::string run = tmp.sub("v" + std::to_string(i++));
    trainers::train(setup_for(run, sets));
    auto l = losses(run);
    REQUIRE(l.size() == 20);
    for (double x : l) REQUIRE(std::isfinite(x));
    const double first = l.front();
    const double last5 = (l[15] + l[16] + l[17] + l[18] + l[19]) / 5.0;
    CHECK(last5 < first);
  }
}

TEST_CASE("bf16 autocast on CPU: bf16 matmuls, fp32 weights, a falling loss, exact resume") {
  TempDir tmp("bf16");
  const std::vector<std::string> bf16 = {"train.precision=bf16"};
  trainers::train(setup_for(tmp.sub("fp32")));
  trainers::train(setup_for(tmp.sub("bf16"), bf16));
  auto f = losses(tmp.sub("fp32")), b = losses(tmp.sub("bf16"));
  REQUIRE(f.size() == 12);
  REQUIRE(b.size() == 12);
  // Autocast is on: the first loss (same weights, same batch) differs from fp32's in the low
  // bits only (bf16 keeps 8 significant bits).
  CHECK(b.front() != f.front());
  CHECK(std::abs(b.front() - f.front()) < 2e-2);
  CHECK((b[9] + b[10] + b[11]) / 3.0 < b.front());
  for (const auto& [name, t] : final_weights(tmp.sub("bf16"))) {
    INFO(name);
    CHECK(t.scalar_type() == at::kFloat);
  }
  // The run measured how much slower bf16 matrix products are here, recorded it in run.json, and
  // warned in train.log exactly when they are more than 2x slower (AVX2-only CPUs); fp32 runs do not measure.
  auto run_json = [&](const std::string& d) { return nlohmann::json::parse(test::read_text(d + "/run.json")); };
  REQUIRE(run_json(tmp.sub("bf16")).contains("cpu_bf16_matmul_slowdown"));
  const double slowdown = run_json(tmp.sub("bf16"))["cpu_bf16_matmul_slowdown"].get<double>();
  CHECK(slowdown > 0);
  CHECK(std::isfinite(slowdown));
  CHECK_FALSE(run_json(tmp.sub("fp32")).contains("cpu_bf16_matmul_slowdown"));
  // The processor is part of the provenance (MKL's kernels and the bf16 path depend on it).
  const std::string cpu = run_json(tmp.sub("fp32"))["provenance"].value("cpu", "");
#if defined(__linux__)
  REQUIRE_FALSE(cpu.empty());
  CHECK(cpu.find(" (") != std::string::npos);
  CHECK(cpu.back() == ')');
#endif
  const bool warned = test::read_text(tmp.sub("bf16") + "/train.log").find("multiplies bf16 matrices") != std::string::npos;
  CHECK(warned == (slowdown > 2.0));
  CHECK(trainers::cpu_bf16_warning(1.9).empty());
  CHECK(trainers::cpu_bf16_warning(21.34).find("21.3x slower than fp32") != std::string::npos);
  // Stop at step 6 and resume: the same losses as the uninterrupted bf16 run, bit for bit.
  trainers::train(setup_for(tmp.sub("part"), {"train.precision=bf16", "train.hard_stop=6"}));
  auto resumed = setup_for(tmp.sub("part"), bf16);
  resumed.resume_from = *trainers::find_latest_checkpoint(tmp.sub("part"));
  trainers::train(resumed);
  CHECK(losses(tmp.sub("part")) == b);
}

TEST_CASE("a damaged checkpoint is skipped in favour of the previous complete one") {
  TempDir tmp("damage");
  const std::string run = tmp.sub("run");
  trainers::train(setup_for(run, {"train.steps=8"}));
  auto latest = trainers::find_latest_checkpoint(run);
  REQUIRE(latest);
  CHECK(fs::path(*latest).filename() == "step_00000008");
  {
    // Flip one byte in the middle of the weights.
    std::fstream f(*latest + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    auto size = f.tellg();
    f.seekp(size / 2);
    char c = 0;
    f.seekg(size / 2);
    f.read(&c, 1);
    c ^= 0x5a;
    f.seekp(size / 2);
    f.write(&c, 1);
  }
  auto fallback = trainers::find_latest_checkpoint(run);
  REQUIRE(fallback);
  CHECK(fs::path(*fallback).filename() == "step_00000004");
  CHECK_THROWS_AS(trainers::load_checkpoint(*latest), UserError);
  // A truncated file is caught the same way.
  fs::resize_file(*fallback + "/optimizer.safetensors", 10);
  CHECK_FALSE(trainers::find_latest_checkpoint(run));
  // Every checkpoint damaged: the same command again refuses to start over on top of the run.
  const std::string config = tmp.sub("tiny.yaml"), metrics = test::read_text(run + "/metrics.jsonl");
  const std::string weights = test::read_text(*latest + "/model.safetensors");
  std::ofstream(config) << kTiny;
  auto r = test::run_ablate("train " + config + " --run-dir " + run + " --set train.steps=8");
  CHECK(r.status == 2);
  CHECK(r.out.find("every checkpoint is damaged") != std::string::npos);
  CHECK(test::read_text(run + "/metrics.jsonl") == metrics);
  CHECK(test::read_text(*latest + "/model.safetensors") == weights);  // still the damaged bytes
}

TEST_CASE("a train_state.json with a bad step is refused before the run directory changes") {
  TempDir tmp("state");
  const std::string run = tmp.sub("run"), config = tmp.sub("tiny.yaml");
  std::ofstream(config) << kTiny;
  auto r = test::run_ablate("train " + config + " --run-dir " + run + " --set train.steps=4");
  REQUIRE(r.status == 0);
  const std::string ckpt = *trainers::find_latest_checkpoint(run);
  const std::string metrics = test::read_text(run + "/metrics.jsonl"), yaml = test::read_text(run + "/config.yaml");
  for (const char* bad : {"-100", "1e300", "\"4\""}) {
    INFO(bad);
    // Edit the step and re-sign the manifest, as a hand edit or a foreign tool would.
    auto state = nlohmann::json::parse(test::read_text(ckpt + "/train_state.json"));
    state["step"] = nlohmann::json::parse(bad);
    const std::string text = state.dump(2);
    std::ofstream(ckpt + "/train_state.json", std::ios::trunc) << text;
    auto manifest = nlohmann::json::parse(test::read_text(ckpt + "/manifest.json"));
    manifest["files"]["train_state.json"] = {{"bytes", text.size()}, {"sha256", data::sha256_hex(text)}};
    std::ofstream(ckpt + "/manifest.json", std::ios::trunc) << manifest.dump(2);
    r = test::run_ablate("train " + config + " --run-dir " + run + " --set train.steps=8");
    CHECK(r.status == 2);
    CHECK(r.out.find("train_state.json: step: expected a non-negative integer") != std::string::npos);
    CHECK(test::read_text(run + "/metrics.jsonl") == metrics);
    CHECK(test::read_text(run + "/config.yaml") == yaml);  // still train.steps 4
  }
}

TEST_CASE("a checkpoint with a different model is refused with a clear message") {
  TempDir tmp("refuse");
  const std::string run = tmp.sub("run");
  trainers::train(setup_for(run, {"train.steps=4"}));
  auto other = setup_for(run, {"model.d_model=48", "train.steps=8"});
  other.resume_from = *trainers::find_latest_checkpoint(run);
  CHECK_THROWS_WITH(trainers::train(other), Catch::Contains("has shape") && Catch::Contains("model.safetensors"));
}

TEST_CASE("learning-rate schedules") {
  trainers::OptimizerOptions opt;
  opt.lr = 1.0;
  trainers::ScheduleOptions s;
  s.warmup = 10;
  s.min_lr_ratio = 0.1;
  s.type = "cosine";
  CHECK(trainers::learning_rate(opt, s, 0, 110) == Approx(0.1));
  CHECK(trainers::learning_rate(opt, s, 9, 110) == Approx(1.0));
  CHECK(trainers::learning_rate(opt, s, 60, 110) == Approx(0.55));
  CHECK(trainers::learning_rate(opt, s, 110, 110) == Approx(0.1));
  s.type = "linear";
  CHECK(trainers::learning_rate(opt, s, 60, 110) == Approx(0.55));
  s.type = "constant";
  CHECK(trainers::learning_rate(opt, s, 100, 110) == Approx(1.0));
  s.type = "wsd";
  s.decay_fraction = 0.2;
  CHECK(trainers::learning_rate(opt, s, 50, 110) == Approx(1.0));
  CHECK(trainers::learning_rate(opt, s, 109, 110) == Approx(0.1));
}

TEST_CASE("fused and foreach AdamW agree with the closed-form update; clipping bounds the norm") {
  auto make = [](const std::string& fused) {
    auto p = at::arange(6, at::kFloat).reshape({2, 3}).requires_grad_(true);
    auto q = at::ones({3}, at::kFloat).requires_grad_(true);
    trainers::OptimizerOptions o;
    o.lr = 0.1;
    o.weight_decay = 0.5;
    o.fused = fused;
    std::vector<trainers::NamedParameter> ps{{"p", p, true}, {"q", q, false}};
    return std::make_pair(ps, o);
  };
  std::vector<at::Tensor> results;
  for (const std::string f : {"on", "off"}) {
    auto [ps, o] = make(f);
    trainers::AdamW adam(ps, o);
    CHECK(adam.fused() == (f == "on"));
    for (int t = 0; t < 3; ++t) {
      ps[0].tensor.mutable_grad() = at::full({2, 3}, 0.5);
      ps[1].tensor.mutable_grad() = at::full({3}, -1.0);
      adam.step(0.1);
    }
    results.push_back(at::cat({ps[0].tensor.detach().flatten(), ps[1].tensor.detach()}));
  }
  CHECK(at::allclose(results[0], results[1], 1e-6, 1e-6));
  // Constant gradients: m̂ = g, v̂ = g², so every step moves by lr·sign(g) (plus decay on p).
  double p0 = 1.0;  // element 1 of p
  for (int t = 0; t < 3; ++t) p0 = p0 * (1 - 0.1 * 0.5) - 0.1 * 0.5 / (0.5 + 1e-8);
  CHECK(results[0][1].item<double>() == Approx(p0).epsilon(1e-5));
  CHECK(results[0][6].item<double>() == Approx(1.3).epsilon(1e-5));  // q: no decay, +0.1 per step

  auto g = at::tensor({3.0f, 4.0f}).requires_grad_(true);
  g.mutable_grad() = at::tensor({3.0f, 4.0f});
  std::vector<trainers::NamedParameter> ps{{"g", g, true}};
  auto norm = trainers::clip_grad_norm(ps, 1.0);
  CHECK(norm.item<double>() == Approx(5.0));
  CHECK(at::linalg_vector_norm(g.grad(), 2).item<double>() == Approx(1.0).epsilon(1e-5));
}
