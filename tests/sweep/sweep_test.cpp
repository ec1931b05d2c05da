// Sweep files: expansion, ids, strict errors (in-process); run / kill / resume / report / slurm
// through the binary (ABLATE_BIN_PATH) on a tiny synthetic model.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "data/core/errors.h"
#include "data/formats/metrics_log.h"
#include "src/sweep/sweep.h"
#include "tests/common.h"

namespace fs = std::filesystem;
using namespace ablate;

namespace {

const char* kBase = R"(model: {d_model: 32, n_layers: 2, n_heads: 2, head_dim: 16, vocab: 34}
data: {source: synthetic, seq_len: 16, synthetic: {vocab: 32, val_sequences: 16}}
train:
  steps: 20
  batch: 4
  schedule: {warmup: 2}
  eval: {every: 10, batches: 2}
  checkpoint: {every: 5}
  probe: {every: 10}
  log: {every: 1}
probe: {seq_len: 16, sequences: 8, batch: 4, train_sequences: 8}
device: cpu
)";

struct Dir {
  fs::path path;
  explicit Dir(const std::string& name) {
    path = fs::temp_directory_path() / ("ablate_sweep_" + name + "_" + std::to_string(::getpid()));
    std::error_code ec;
    fs::remove_all(path, ec);
    fs::create_directories(path);
    std::ofstream(path / "base.yaml") << kBase;
  }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

// Starts `BINARY sweep run SWEEP --slots 1` in a child process writing to LOG; returns its pid.
pid_t spawn_sweep(const std::string& binary, const std::string& sweep, const fs::path& log) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (!freopen(log.c_str(), "w", stdout) || !freopen(log.c_str(), "a", stderr)) _exit(126);
    execl(binary.c_str(), "ablate", "sweep", "run", sweep.c_str(), "--slots", "1", (char*)nullptr);
    _exit(127);
  }
  return pid;
}

// Polls until `file` exists (at most 60 s).
void wait_for(const fs::path& file) {
  auto start = std::chrono::steady_clock::now();
  while (!fs::exists(file) && std::chrono::steady_clock::now() - start < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

}  // namespace

TEST_CASE("plan expansion: grid x zip x seeds, grid first key slowest, seeds innermost") {
  Dir d("expand");
  auto path = d.write("s.yaml", R"(base: base.yaml
name: ex
grid:
  model.norm.placement: [pre, post]
  model.attention.gate.kind: [none, static]
zip:
  data.seq_len: [16, 32]
  data.loss_window: [[1, 16], [1, 32]]
seeds: [0, 1]
)");
  auto plan = sweep::make_plan(sweep::parse_sweep(path));
  REQUIRE(plan.points.size() == 2 * 2 * 2 * 2);
  const auto& p0 = plan.points[0];
  CHECK(p0.label == "placement=pre_kind=none_seq_len=16_loss_window=1-16_seed=0");
  CHECK(p0.variant == "placement=pre_kind=none_seq_len=16_loss_window=1-16");
  CHECK(plan.points[1].label == "placement=pre_kind=none_seq_len=16_loss_window=1-16_seed=1");
  CHECK(plan.points[2].label == "placement=pre_kind=none_seq_len=32_loss_window=1-32_seed=0");
  CHECK(plan.points[15].label == "placement=post_kind=static_seq_len=32_loss_window=1-32_seed=1");
  CHECK(p0.run_dir == (d.path / "runs" / "ex" / p0.id).string());
  CHECK(p0.yaml.find("name: " + p0.id) != std::string::npos);
  CHECK(p0.target_step == 20);
  // Ids are the label plus 8 hex digits of the resolved config, and stable across loads.
  REQUIRE(p0.id.size() == p0.label.size() + 9);
  auto again = sweep::make_plan(sweep::parse_sweep(path));
  for (size_t i = 0; i < plan.points.size(); ++i) CHECK(again.points[i].id == plan.points[i].id);
  // A --set applied to every point changes every id (a different config is a different run).
  auto shorter = sweep::make_plan(sweep::parse_sweep(path, {"train.steps=10"}));
  CHECK(shorter.points[0].label == p0.label);
  CHECK(shorter.points[0].id != p0.id);
  CHECK(shorter.points[0].target_step == 10);
  CHECK(sweep::sanitise("A b/[1, 2]") == "a-b-1-2");
  CHECK(sweep::sanitise("-4.0") == "m4.0");  // a negative value keeps its sign
  CHECK(sweep::sanitise("4.0") == "4.0");
  CHECK(p0.yaml.find("by_name: true") == std::string::npos);
  // init_from_seed: every point builds its weights keyed by (seed, name).
  auto shared = d.write("shared.yaml", "base: base.yaml\nname: sh\ninit_from_seed: true\ngrid:\n"
                                       "  model.norm.placement: [pre, sandwich]\n");
  auto splan = sweep::make_plan(sweep::parse_sweep(shared));
  REQUIRE(splan.points.size() == 2);
  for (const auto& p : splan.points) CHECK(p.yaml.find("by_name: true") != std::string::npos);
}

TEST_CASE("the README's demo ablation: the demo config, pre-norm against sandwich, shared initial weights") {
  auto plan = sweep::make_plan(sweep::parse_sweep(std::string(ABLATE_SOURCE_DIR) + "/experiments/demo-ablation.yaml"));
  REQUIRE(plan.points.size() == 2);
  CHECK(plan.points[0].label == "placement=pre_seed=0");
  CHECK(plan.points[1].label == "placement=sandwich_seed=0");
  for (const auto& p : plan.points) {
    CHECK(p.target_step == 600);
    CHECK(p.yaml.find("by_name: true") != std::string::npos);
    CHECK(p.yaml.find("source: synthetic") != std::string::npos);
  }
  // Extra arguments of scripts/demo.sh are --set overrides for every point.
  auto longer = sweep::make_plan(sweep::parse_sweep(std::string(ABLATE_SOURCE_DIR) + "/experiments/demo-ablation.yaml",
                                                    {"train.steps=1200"}));
  CHECK(longer.points[1].target_step == 1200);
}

TEST_CASE("strict sweep files: one-line errors naming file:line and key") {
  Dir d("strict");
  auto unknown = d.write("u.yaml", "base: base.yaml\ngird:\n  model.norm.placement: [pre]\n");
  CHECK_THAT(error_of([&] { sweep::parse_sweep(unknown); }),
             Catch::Contains("u.yaml:2: gird: unknown key (did you mean grid?)"));
  auto badkey = d.write("k.yaml", "base: base.yaml\ngrid:\n  model.norm.placment: [pre]\n");
  CHECK_THAT(error_of([&] { sweep::parse_sweep(badkey); }),
             Catch::Contains("k.yaml:3: grid.model.norm.placment: unknown config key (did you mean model.norm.placement?)"));
  auto zip = d.write("z.yaml", "base: base.yaml\nzip:\n  data.seq_len: [8, 16]\n  data.loss_window: [[1, 8]]\n");
  CHECK_THAT(error_of([&] { sweep::parse_sweep(zip); }),
             Catch::Contains("z.yaml:4: zip.data.loss_window: 1 values, but zip.data.seq_len has 2"));
  auto nobase = d.write("n.yaml", "grid:\n  model.norm.placement: [pre]\n");
  CHECK_THAT(error_of([&] { sweep::parse_sweep(nobase); }), Catch::Contains("base: required"));
  auto seeds = d.write("s.yaml", "base: base.yaml\nseeds: [0, x]\n");
  CHECK_THAT(error_of([&] { sweep::parse_sweep(seeds); }), Catch::Contains("s.yaml:2: seeds: 'x' is not an integer"));
  // A bad value fails the plan naming the point, before anything runs.
  auto bad = d.write("b.yaml", "base: base.yaml\ngrid:\n  model.norm.placement: [pre, bogus]\n");
  auto msg = error_of([&] { sweep::make_plan(sweep::parse_sweep(bad)); });
  CHECK_THAT(msg, Catch::Contains("point 1 (placement=bogus)"));
  CHECK_THAT(msg, Catch::Contains("unknown value 'bogus'"));
  CHECK(msg.find('\n') == std::string::npos);
  auto r = ablate::test::run_ablate("sweep plan " + bad);
  CHECK(r.status == 2);
  CHECK(!fs::exists(d.path / "runs"));
}

TEST_CASE("sweep run: kill mid-run, re-run, every point completes exactly once; status; report") {
  Dir d("run");
  auto path = d.write("s.yaml", R"(base: base.yaml
name: placement
grid:
  model.norm.placement: [pre, sandwich, post]
)");
  auto plan = sweep::make_plan(sweep::parse_sweep(path));
  REQUIRE(plan.points.size() == 3);

  // Start the sweep with one slot, SIGKILL it once the first point has a checkpoint.
  pid_t pid = spawn_sweep(ABLATE_BIN_PATH, path, d.path / "sweep1.log");
  const fs::path first = plan.points[0].run_dir;
  wait_for(first / "checkpoints" / "LATEST");
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(!fs::exists(first / "done"));

  auto r = ablate::test::run_ablate("sweep run " + path + " --slots 2");
  INFO(r.out);
  CHECK(r.status == 0);
  for (const auto& p : plan.points) {
    INFO(p.id);
    CHECK(fs::exists(fs::path(p.run_dir) / "done"));
    CHECK(fs::exists(fs::path(p.run_dir) / "config.yaml"));
    std::map<int64_t, int> train_steps;
    for (const auto& rec : data::read_metrics((fs::path(p.run_dir) / "metrics.jsonl").string()))
      if (rec["split"] == "train") ++train_steps[rec["step"].get<int64_t>()];
    CHECK(train_steps.size() == 20);
    for (const auto& [s, n] : train_steps) CHECK(n == 1);
  }
  // A third run trains nothing.
  r = ablate::test::run_ablate("sweep run " + path);
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("0 trained, 3 already finished, 0 failed"));

  r = ablate::test::run_ablate("sweep status " + path);
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("3 done, 0 running, 0 failed, 0 pending"));
  CHECK_THAT(r.out, Catch::Contains("20/20"));

  auto html = (d.path / "r.html").string(), csv = (d.path / "r.csv").string(), json = (d.path / "r.json").string();
  r = ablate::test::run_ablate("sweep report " + path + " --out " + html + " --csv " + csv + " --json " + json);
  INFO(r.out);
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("placement=sandwich"));
  CHECK_THAT(r.out, Catch::Contains("every point of a seed shares its data order"));
  std::ifstream in(csv);
  std::string header, line;
  std::getline(in, header);
  CHECK_THAT(header, Catch::StartsWith("variant,model.norm.placement,seeds,val_loss_mean,val_loss_std"));
  CHECK_THAT(header, Catch::Contains(",sink_eps_max_mean,sink_eps_max_std,sink_eps_share_max_mean,sink_eps_share_max_std"));
  int rows = 0;
  while (std::getline(in, line)) {
    ++rows;
    CHECK(line.find(",,") == std::string::npos);
  }
  CHECK(rows == 3);
  std::stringstream ss;
  ss << std::ifstream(html).rdbuf();
  CHECK_THAT(ss.str(), Catch::Contains("<section id=\"sweep\">"));
  CHECK(fs::exists(json));
}

TEST_CASE("sweep report table: a metric that fewer seeds have than the val loss says its n") {
  auto stat = [](size_t n, double mean, double sd) {
    return nlohmann::json{{"n", n}, {"mean", n ? nlohmann::json(mean) : nlohmann::json()}, {"std", sd}};
  };
  nlohmann::json v = {{"variant", "variant=sigmoid"}, {"seeds", {0, 1, 2}}};
  v["val_loss"] = stat(3, 4.25, 0.01);
  v["spike_magnitude"] = stat(3, 120.0, 4.0);
  v["sink_mass"] = stat(3, 0.1, 0.02);
  v["sink_eps"] = stat(3, 0.0, 0.0);
  v["sink_eps_max"] = stat(3, 0.5, 0.1);
  v["sink_eps_share_max"] = stat(2, 0.25, 0.05);  // one seed probed before the share existed
  nlohmann::json report = {{"variants", {v}}, {"data_order", nlohmann::json::object()}};
  const std::string table = sweep::report_table(report);
  INFO(table);
  CHECK_THAT(table, Catch::Contains("0.25 ± 0.05 (n 2)"));
  CHECK_THAT(table, Catch::Contains("3/3"));
  CHECK(table.find("(n 3)") == std::string::npos);
  v["sink_eps_share_max"] = stat(0, 0, 0);
  report["variants"] = {v};
  CHECK(sweep::report_table(report).find("(n 0)") == std::string::npos);
}

TEST_CASE("sweep report averages finished points only; unfinished ones with values are counted") {
  Dir d("finished_only");
  auto path = d.write("s.yaml", R"(base: base.yaml
name: finished_only
grid:
  model.norm.placement: [pre]
seeds: [0, 1, 2]
)");
  auto plan = sweep::make_plan(sweep::parse_sweep(path), (d.path / "runs").string());
  REQUIRE(plan.points.size() == 3);
  // seed 0 finished (val 4.0, spike 300); seed 1 stopped at step 10 (val 6.0, spike 40): an earlier
  // probe than seed 0's; seed 2 never started
  auto record = [](const sweep::Point& p, int step, double val, double spike, bool done) {
    fs::create_directories(p.run_dir);
    std::ofstream m(fs::path(p.run_dir) / "metrics.jsonl");
    m << R"({"step": )" << step << R"(, "split": "val", "loss": )" << val << "}\n";
    m << R"({"step": )" << step << R"(, "split": "probe", "probe": {"spike": {"magnitude": )" << spike
      << R"(}, "sink": {"mass": 0.1, "sink_eps": 0.0, "sink_eps_per_layer": [0.0, 0.25]}}})" << "\n";
    if (done) std::ofstream(fs::path(p.run_dir) / "done") << "";
  };
  record(plan.points[0], 20, 4.0, 300.0, true);
  record(plan.points[1], 10, 6.0, 40.0, false);
  auto report = sweep::report_json(plan);
  REQUIRE(report["variants"].size() == 1);
  const auto& v = report["variants"][0];
  CHECK(v["finished"] == 1);
  CHECK(v["unfinished_with_values"] == 1);
  CHECK(v["val_loss"]["n"] == 1);
  CHECK(v["val_loss"]["mean"].get<double>() == Approx(4.0));
  CHECK(v["spike_magnitude"]["mean"].get<double>() == Approx(300.0));
  CHECK(v["sink_eps_max"]["mean"].get<double>() == Approx(0.25));
  // the stopped point keeps its own values among the points
  CHECK(report["points"][1]["state"] == "pending");
  CHECK(report["points"][1]["val_loss"].get<double>() == Approx(6.0));
  const std::string table = sweep::report_table(report);
  INFO(table);
  CHECK_THAT(table, Catch::Contains("1/3"));
  CHECK_THAT(table, Catch::Contains("1 unfinished point(s) with values left out"));
  CHECK_THAT(sweep::report_csv(report), Catch::Contains(",3,4,0,"));  // seeds planned, then val loss 4 ± 0
  // once it finishes, it counts
  std::ofstream(fs::path(plan.points[1].run_dir) / "done") << "";
  report = sweep::report_json(plan);
  CHECK(report["variants"][0]["val_loss"]["mean"].get<double>() == Approx(5.0));
  CHECK(report["variants"][0]["unfinished_with_values"] == 0);
  CHECK(sweep::report_table(report).find("left out") == std::string::npos);
}

TEST_CASE("sweep run keeps launching points after its binary file is rebuilt or deleted") {
  Dir d("rebuilt");
  auto path = d.write("s.yaml", R"(base: base.yaml
name: rebuilt
grid:
  model.norm.placement: [pre, sandwich]
)");
  auto plan = sweep::make_plan(sweep::parse_sweep(path));
  REQUIRE(plan.points.size() == 2);
  // A private copy of the binary runs the sweep; it is deleted once the first point has started.
  const fs::path copy = d.path / "ablate-copy";
  fs::copy_file(ABLATE_BIN_PATH, copy);
  fs::permissions(copy, fs::perms::owner_all);
  pid_t pid = spawn_sweep(copy.string(), path, d.path / "sweep.log");
  wait_for(fs::path(plan.points[0].run_dir) / "stdout.log");
  fs::remove(copy);
  int status = 0;
  waitpid(pid, &status, 0);
  INFO(ablate::test::read_text(d.path / "sweep.log"));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  for (const auto& p : plan.points) CHECK(fs::exists(fs::path(p.run_dir) / "done"));
}

TEST_CASE("a point failing at train time is retried, reported, and does not stop the others") {
  Dir d("fail");
  auto path = d.write("s.yaml", R"(base: base.yaml
name: fails
set: {train.steps: 5, train.probe.every: 0}
zip:
  data.source: [synthetic, shards]
  data.train: ["", /nonexistent/train.bin]
  model.vocab: [34, 257]
)");
  auto r = ablate::test::run_ablate("sweep run " + path + " --retries 1");
  INFO(r.out);
  CHECK(r.status == 1);
  CHECK_THAT(r.out, Catch::Contains("retry 1 of 1"));
  CHECK_THAT(r.out, Catch::Contains("1 trained, 0 already finished, 1 failed"));
  CHECK_THAT(r.out, Catch::Contains("failed: source=shards_train=nonexistent-train.bin_vocab=257_"));
  r = ablate::test::run_ablate("sweep status " + path);
  CHECK_THAT(r.out, Catch::Contains("1 done, 0 running, 1 failed, 0 pending"));
}

TEST_CASE("status and report: a point stopped between logged steps shows its checkpoint's step; stray run directories") {
  Dir d("stopped");
  auto path = d.write("s.yaml", R"(base: base.yaml
name: stopped
set: {train.log.every: 4, train.probe.every: 0}
)");
  auto plan = sweep::make_plan(sweep::parse_sweep(path));
  REQUIRE(plan.points.size() == 1);
  auto r = ablate::test::run_ablate("sweep run " + path);
  INFO(r.out);
  REQUIRE(r.status == 0);
  // Make it look like a run that a signal stopped at step 15: its last checkpoint is 15 while its
  // last logged step is 12 (log.every 4), and its failed marker says so.
  const fs::path dir = plan.points[0].run_dir;
  fs::remove(dir / "done");
  fs::remove_all(dir / "checkpoints" / "step_00000020");
  REQUIRE(fs::exists(dir / "checkpoints" / "step_00000015"));
  std::string kept;
  for (const auto& rec : data::read_metrics((dir / "metrics.jsonl").string()))
    if (rec["step"].get<int64_t>() <= 12) kept += rec.dump() + "\n";
  std::ofstream(dir / "metrics.jsonl") << kept;
  std::ofstream(dir / "failed") << "stopped at step 15 of 20\n";

  r = ablate::test::run_ablate("sweep status " + path);
  CHECK_THAT(r.out, Catch::Contains("0 done, 0 running, 1 failed, 0 pending"));
  CHECK_THAT(r.out, Catch::Contains("15/20"));
  CHECK_THAT(r.out, !Catch::Contains("no point of this plan"));
  // Without the failed marker (stopped by a signal or a job's end, not failed) it is pending, and
  // told from a point never started by the checkpoint it resumes from.
  fs::remove(dir / "failed");
  r = ablate::test::run_ablate("sweep status " + path);
  CHECK_THAT(r.out, Catch::Contains("0 done, 0 running, 0 failed, 1 pending"));
  CHECK_THAT(r.out, Catch::Contains("pending  15/20     interrupted; `sweep run` resumes it from its step-15 checkpoint"));
  std::ofstream(dir / "failed") << "stopped at step 15 of 20\n";

  // A run directory of no planned point (an earlier version of the sweep file) is named;
  // other folders are not.
  const fs::path runs = dir.parent_path();
  fs::create_directories(runs / "old_point_0123abcd");
  std::ofstream(runs / "old_point_0123abcd" / "config.yaml") << "name: old\n";
  fs::create_directories(runs / "notes");
  r = ablate::test::run_ablate("sweep status " + path);
  CHECK_THAT(r.out, Catch::Contains("1 run directory in " + runs.string() +
                                    " belongs to no point of this plan (from an earlier version of the sweep "
                                    "file?): old_point_0123abcd\n"));
  CHECK_THAT(r.out, !Catch::Contains("notes"));
  const auto json = (d.path / "r.json").string();
  r = ablate::test::run_ablate("sweep report " + path + " --out " + (d.path / "r.html").string() + " --json " + json);
  REQUIRE(r.status == 0);
  std::stringstream ss;
  ss << std::ifstream(json).rdbuf();
  CHECK_THAT(ss.str(), Catch::Contains("\"step\": 15"));
}

TEST_CASE("status: a running point shows its throughput and the time left") {
  Dir d("pace");
  auto path = d.write("s.yaml", "base: base.yaml\nname: pace\n");
  auto plan = sweep::make_plan(sweep::parse_sweep(path));
  REQUIRE(plan.points.size() == 1);
  REQUIRE(plan.points[0].target_step == 20);
  const fs::path dir = plan.points[0].run_dir;
  fs::create_directories(dir);
  // 64 tokens a step, step 10 of 20: 640 tokens to go.
  auto log = [&](double tps) {
    std::ofstream(dir / "metrics.jsonl") << R"({"split":"train","step":5,"tokens":320,"tokens_per_s":1000.0})" "\n"
                                         << R"({"split":"train","step":10,"tokens":640,"tokens_per_s":)" << tps << "}\n"
                                         << R"({"split":"val","step":10,"tokens":640,"loss":3.0})" "\n";
  };
  log(32.0);
  // Not running (no process holds the lock): no pace.
  auto r = ablate::test::run_ablate("sweep status " + path);
  INFO(r.out);
  CHECK_THAT(r.out, Catch::Contains("pending  10/20"));
  CHECK_THAT(r.out, !Catch::Contains("tokens/s"));
  // Running: the lock held by another open file (this process), as a training process holds it.
  const int fd = ::open((dir / ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
  r = ablate::test::run_ablate("sweep status " + path);
  CHECK_THAT(r.out, Catch::Contains("running  10/20     32 tokens/s, ~20 s left"));
  log(0.5);  // 1,280 s
  r = ablate::test::run_ablate("sweep status " + path);
  CHECK_THAT(r.out, Catch::Contains("0.5 tokens/s, ~21 min left"));
  log(2500.0);  // the last train record counts, not the earlier 1,000 tokens/s
  r = ablate::test::run_ablate("sweep status " + path);
  CHECK_THAT(r.out, Catch::Contains("2.5k tokens/s, ~0 s left"));
  ::close(fd);
}

TEST_CASE("sweep run --progress: a line per running point with its step and pace; --progress 0 none") {
  Dir d("progress");
  // 400 steps of the tiny model: long enough (a second or more) for several 0.1 s progress lines.
  auto path = d.write("s.yaml", "base: base.yaml\nname: pr\nset:\n  train.steps: 400\n  train.checkpoint.every: 400\n"
                                "  train.eval.every: 400\n  train.probe.every: 400\n");
  auto r = ablate::test::run_ablate("sweep run " + path + " --progress 0.1");
  INFO(r.out);
  REQUIRE(r.status == 0);
  const std::regex line(R"(sweep: \[0\] point_[0-9a-f]{8}: step [0-9]+/400(, [0-9.]+k? tokens/s, ~[0-9]+ (s|min) left)?)");
  int lines = 0, paced = 0;
  std::istringstream in(r.out);
  for (std::string l; std::getline(in, l);) {
    std::smatch m;
    if (std::regex_search(l, m, line)) {
      ++lines;
      paced += m[1].matched;
    }
  }
  CHECK(lines >= 2);
  CHECK(paced >= 1);  // once the trainer has logged a step, the line carries its pace
  auto quiet = d.write("q.yaml", "base: base.yaml\nname: quiet\nset:\n  train.steps: 400\n");
  r = ablate::test::run_ablate("sweep run " + quiet + " --progress 0");
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, !Catch::Contains(": step "));
  CHECK(ablate::test::run_ablate("sweep run " + quiet + " --progress -1").status == 2);
}

TEST_CASE("slurm: a job array whose task i runs point i") {
  Dir d("slurm");
  auto path = d.write("s.yaml", "base: base.yaml\nname: sl\ngrid:\n  model.norm.placement: [pre, post]\nseeds: [0, 1]\n");
  auto r = ablate::test::run_ablate("sweep slurm " + path + " --gpus 1 --set train.steps=7");
  INFO(r.out);
  CHECK(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("#SBATCH --array=0-3\n"));
  CHECK_THAT(r.out, Catch::Contains("#SBATCH --gres=gpu:1\n"));
  CHECK_THAT(r.out, Catch::Contains("sweep run '" + fs::absolute(path).string() + "' --only \"$SLURM_ARRAY_TASK_ID\" '--set' 'train.steps=7'"));
  auto plan = sweep::make_plan(sweep::parse_sweep(path));
  CHECK(plan.points[3].label == "placement=post_seed=1");
}
