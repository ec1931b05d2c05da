// Data parallelism through `ablate launch` on CPU (Gloo): 2 processes x b equal 1 process x 2b,
// parameters identical on every rank after every step, exact resume of a 2-process run, a
// killed or hanging rank ends the launch with a non-zero status within the timeout, and the run
// directory stays resumable.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/common.h"

namespace fs = std::filesystem;
using nlohmann::json;
using ablate::test::run_ablate;

namespace {

// 8 sequences per step; eval and a checkpoint every 4 steps.
const char* kConfig = R"(seed: 5
device: cpu
model: {d_model: 32, n_layers: 2, n_heads: 2, head_dim: 16, vocab: 34}
data: {source: synthetic, seq_len: 16, synthetic: {vocab: 32, val_sequences: 16}}
train:
  steps: 8
  batch: 8
  optimizer: {lr: 0.01}
  schedule: {warmup: 2}
  eval: {every: 4, batches: 2}
  checkpoint: {every: 4}
  log: {every: 1}
  dist: {timeout: 20, check_every: 1}
)";

// (step, loss) of the records of one split.
std::vector<std::pair<int64_t, double>> losses(const fs::path& run, const std::string& split) {
  std::vector<std::pair<int64_t, double>> out;
  std::ifstream in(run / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const json r = json::parse(line);
    if (r["split"] == split) out.emplace_back(r["step"].get<int64_t>(), r["loss"].get<double>());
  }
  return out;
}

void check_close(const std::vector<std::pair<int64_t, double>>& a, const std::vector<std::pair<int64_t, double>>& b,
                 double tol) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("record " << i << ": step " << a[i].first << " loss " << a[i].second << " vs " << b[i].second);
    CHECK(a[i].first == b[i].first);
    CHECK(std::abs(a[i].second - b[i].second) <= tol);
  }
}

}  // namespace

TEST_CASE("launch --nproc 2 trains the same curve as one process; resume of a 2-process run is exact") {
  ablate::test::ScratchDir dir("dist");
  const fs::path config = dir / "tiny.yaml";
  std::ofstream(config) << kConfig;
  const std::string cfg = config.string();

  const fs::path one = dir / "one", two = dir / "two", accum = dir / "accum";
  auto r1 = run_ablate("--log-level warn train " + cfg + " --run-dir " + one.string());
  INFO(r1.out);
  REQUIRE(r1.status == 0);
  // train.dist.check_every 1: every step, every rank's parameter digest is compared with rank 0's
  // (the run fails otherwise).
  auto r2 = run_ablate("launch --nproc 2 -- --log-level warn train " + cfg + " --run-dir " + two.string());
  INFO(r2.out);
  REQUIRE(r2.status == 0);
  CHECK(r2.out.find("rank 1 finished") != std::string::npos);
  const auto l1 = losses(one, "train"), l2 = losses(two, "train");
  REQUIRE(l1.size() == 8);
  check_close(l1, l2, 1e-5);
  check_close(losses(one, "val"), losses(two, "val"), 1e-5);
  // Only rank 0 writes: one record per step.
  CHECK(json::parse(ablate::test::read_text(two / "run.json"))["world_size"] == 2);

  // World size 1 through launch: a process group of one, the Reducer path; the same curve.
  const fs::path solo = dir / "solo";
  auto r0 = run_ablate("launch --nproc 1 -- --log-level info train " + cfg + " --run-dir " + solo.string());
  INFO(r0.out);
  REQUIRE(r0.status == 0);
  CHECK(r0.out.find("data parallel: rank 0 of 1 (Gloo)") != std::string::npos);
  check_close(l1, losses(solo, "train"), 1e-5);

  // Gradient accumulation per rank (2 micro-batches of 2 on each of 2 ranks) trains the same curve.
  auto r3 = run_ablate("launch --nproc 2 -- --log-level warn train " + cfg + " --run-dir " + accum.string() +
                       " --set train.micro_batch=2");
  INFO(r3.out);
  REQUIRE(r3.status == 0);
  check_close(l1, losses(accum, "train"), 1e-5);

  // Stop the 2-process run at step 4 (hard_stop), resume it to the end: the same records, bit for bit.
  const fs::path split = dir / "split";
  auto a = run_ablate("launch --nproc 2 -- --log-level warn train " + cfg + " --run-dir " + split.string() +
                      " --set train.hard_stop=4");
  INFO(a.out);
  REQUIRE(a.status == 0);
  REQUIRE(fs::exists(split / "checkpoints" / "step_00000004"));
  auto b = run_ablate("launch --nproc 2 -- --log-level warn train " + cfg + " --run-dir " + split.string());
  INFO(b.out);
  REQUIRE(b.status == 0);
  const auto ls = losses(split, "train");
  REQUIRE(ls.size() == l2.size());
  for (size_t i = 0; i < ls.size(); ++i) CHECK(ls[i] == l2[i]);

  // Resuming with another world size is refused, naming the checkpoint.
  auto c = run_ablate("--log-level warn train " + cfg + " --run-dir " + split.string() + " --set train.steps=12");
  CHECK(c.status == 2);
  CHECK(c.out.find("written by 2 process(es), this run has 1") != std::string::npos);
}

TEST_CASE("a killed or hanging rank ends the launch non-zero within the timeout; the run resumes") {
  ablate::test::ScratchDir dir("dist-fail");
  const fs::path config = dir / "tiny.yaml";
  std::ofstream(config) << kConfig;
  const std::string cfg = config.string();
  using Clock = std::chrono::steady_clock;

  // Rank 1 is SIGKILLed after step 5 (one checkpoint, step 4, exists by then).
  const fs::path killed = dir / "killed";
  auto t0 = Clock::now();
  auto k = run_ablate("launch --nproc 2 --grace 5 -- --log-level warn train " + cfg + " --run-dir " + killed.string(),
                      "ABLATE_FAULT=kill:1:5");
  const double killed_s = std::chrono::duration<double>(Clock::now() - t0).count();
  INFO(k.out);
  CHECK(k.status != 0);
  CHECK(k.out.find("rank 1 (pid") != std::string::npos);
  CHECK(k.out.find("killed by signal") != std::string::npos);
  CHECK(killed_s < 40);  // timeout 20 s + grace 5 s, at most
  REQUIRE(fs::exists(killed / "checkpoints" / "step_00000004"));
  // The same command continues from step 4 and finishes.
  auto again = run_ablate("launch --nproc 2 -- --log-level warn train " + cfg + " --run-dir " + killed.string());
  INFO(again.out);
  CHECK(again.status == 0);
  CHECK(losses(killed, "train").back().first == 8);

  // Rank 1 hangs after step 5: rank 0's next collective times out (train.dist.timeout 3 s), the
  // launcher stops rank 1 (SIGTERM, then SIGKILL after the grace period).
  const fs::path hung = dir / "hung";
  t0 = Clock::now();
  auto h = run_ablate("launch --nproc 2 --grace 2 -- --log-level warn train " + cfg + " --run-dir " + hung.string() +
                          " --set train.dist.timeout=3",
                      "ABLATE_FAULT=hang:1:5");
  const double hung_s = std::chrono::duration<double>(Clock::now() - t0).count();
  INFO(h.out);
  CHECK(h.status != 0);
  CHECK(h.out.find("rank 0: ") != std::string::npos);  // the survivor's one-line reason
  CHECK(h.out.find("did not stop; SIGKILL") != std::string::npos);
  CHECK(hung_s < 30);
}

TEST_CASE("bad distributed settings are one-line errors with exit status 2") {
  ablate::test::ScratchDir dir("dist-bad");
  const fs::path config = dir / "tiny.yaml";
  std::ofstream(config) << kConfig;
  auto r = run_ablate("train " + config.string() + " --run-dir " + (dir / "r").string(), "WORLD_SIZE=2 RANK=x");
  CHECK(r.status == 2);
  CHECK(r.out.find("RANK='x'") != std::string::npos);
  r = run_ablate("launch --nproc 3 -- train " + config.string() + " --run-dir " + (dir / "r3").string());
  CHECK(r.status != 0);
  CHECK(r.out.find("train.batch: 8 sequences do not split evenly over 3 processes") != std::string::npos);
  r = run_ablate("launch --nproc 2");
  CHECK(r.status == 2);
  CHECK(r.out.find("give the command after --") != std::string::npos);
  r = run_ablate("launch --nproc 2 -- --log-level warn probe " + (dir / "r").string());
  CHECK(r.status == 2);
  CHECK(r.out.find("only 'train' runs data-parallel (got 'probe')") != std::string::npos);
}
