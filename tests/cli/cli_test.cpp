// The program's contract: exit codes, one-line errors, help generated from the parser.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "src/cli/commands.h"

namespace {

struct Result {
  int status;
  std::string out;  // stdout and stderr together
};

Result run(const std::string& args) {
  std::string cmd = std::string(ABLATE_BIN_PATH) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  int rc = pclose(p);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

std::string src(const std::string& rel) { return std::string(ABLATE_SOURCE_DIR) + "/" + rel; }

size_t count_lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace

TEST_CASE("config show prints the resolved demo config with overrides") {
  auto r = run("config show " + src("configs/demo.yaml") + " --set model.d_model=64");
  CHECK(r.status == 0);
  CHECK(r.out.find("  d_model: 64\n") != std::string::npos);
  CHECK(r.out.find("\nbase:") == std::string::npos);
}

TEST_CASE("a misspelt key exits 2 with one line naming the key and a suggestion") {
  auto r = run("config show " + src("configs/demo.yaml") + " --set model.d_modle=64");
  CHECK(r.status == 2);
  CHECK(count_lines(r.out) == 1);
  CHECK(r.out.find("model.d_modle: unknown key (did you mean 'model.d_model'?)") != std::string::npos);
}

TEST_CASE("missing files and bad flags exit 2 with one line") {
  auto r = run("config show /nonexistent/x.yaml");
  CHECK(r.status == 2);
  CHECK(count_lines(r.out) == 1);
  CHECK(r.out.find("/nonexistent/x.yaml: no such config file") != std::string::npos);
  r = run("config show");
  CHECK(r.status == 2);
  CHECK(count_lines(r.out) == 1);
  r = run("--no-such-flag version");
  CHECK(r.status == 2);
  r = run("--log-level loud version");
  CHECK(r.status == 2);
  r = run("");
  CHECK(r.status == 2);
}

TEST_CASE("keys, sizes and numbers a config cannot hold exit 2 with one line") {
  const auto dir = std::filesystem::temp_directory_path() / ("ablate-cli-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream((dir / name).string()) << text;
    return (dir / name).string();
  };
  struct Case {
    std::string args, expect;
  };
  const std::string demo = src("configs/demo.yaml");
  const std::vector<Case> cases = {
      {"config show " + write("list_key.yaml", "model:\n  [a, b]: 1\n"), "list_key.yaml:2: keys must be plain names"},
      {"config show " + write("twice.yaml", "model:\n  d_model: 8\n  d_model: 16\n"),
       "twice.yaml:3: d_model: key given twice"},
      {"config show " + write("two_docs.yaml", "seed: 1\n---\nseed: 2\n"), "two_docs.yaml:3: a second YAML document"},
      {"config show " + write("cycle.yaml", "model: &x {d_model: 8, extra: *x}\n"), "nested deeper than 64 levels"},
      {"config show " + demo + " --set model.d_model=100000000000", "value 100000000000 is out of range"},
      {"config show " + demo + " --set model.norm.dyt_alpha=.inf", "expected a finite number"},
      {"config show " + demo + " --set train.steps=1000000000000 --set train.batch=1000000",
       "more than 2^53 tokens"},
      {"config show " + demo + " --set train.steps=10 --set train.hard_stop=11", "train.hard_stop: step 11 is after the last step 10"},
      // The last step of a train.tokens schedule is ceil(tokens / (batch x seq_len)): 1000 / 64 -> 16.
      {"config show " + demo + " --set train.tokens=1000 --set train.batch=2 --set data.seq_len=32 --set train.hard_stop=17",
       "train.hard_stop: step 17 is after the last step 16"},
      {"model summary " + demo + " --set model.vocab=2000000000 --set model.d_model=1000000", "GiB of memory"},
      {"bench " + demo + " --threads 100000", "--threads"},
      {"bench " + demo + " --peak-tflops -1", "--peak-tflops"},
      {"data inspect x.bin --head -1", "--head"},
      {"train " + demo + " --run-dir ''", "--run-dir: empty"},
      {"train --resume " + dir.string() + "/a --run-dir " + dir.string() + "/b", "name different run directories"},
  };
  for (const auto& c : cases) {
    INFO(c.args);
    auto r = run(c.args);
    INFO(r.out);
    CHECK(r.status == 2);
    CHECK(count_lines(r.out) == 1);
    CHECK(r.out.find(c.expect) != std::string::npos);
  }
  // One run directory spelled two ways is not two: the resumption goes on (and fails here only
  // because nothing was trained in it).
  auto same = run("train --resume " + dir.string() + "/a/ --run-dir " + dir.string() + "/./a");
  CHECK(same.status == 2);
  CHECK(same.out.find("name different run directories") == std::string::npos);
  CHECK(same.out.find("/a/: not a run directory") != std::string::npos);
  // The last step of a train.tokens schedule itself is a valid hard_stop (ceil, not floor, of 1000 / 64).
  auto last = run("config show " + demo + " --set train.tokens=1000 --set train.batch=2 --set data.seq_len=32" +
                  " --set train.hard_stop=16");
  CHECK(last.status == 0);
  // An empty document after the first (a trailing '---') is not a second config.
  auto r = run("config show " + write("trailing.yaml", "seed: 7\n---\n"));
  CHECK(r.status == 0);
  CHECK(r.out.find("seed: 7\n") != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE("help and version") {
  auto r = run("--help");
  CHECK(r.status == 0);
  CHECK(r.out.find("config") != std::string::npos);
  r = run("config show --help");
  CHECK(r.status == 0);
  CHECK(r.out.find("--set") != std::string::npos);
  r = run("version");
  CHECK(r.status == 0);
  CHECK(r.out.find("libtorch 2.11.0") != std::string::npos);
  CHECK(r.out.find("cuda usable") != std::string::npos);
}

namespace {
// x * 1 for a denormal x, computed where it is called (volatile: not folded at compile time).
float times_one(float x) {
  volatile float v = x;
  volatile float one = 1.0f;
  return v * one;
}
}  // namespace

TEST_CASE("set_flush_denormal: denormals become 0 on this thread, the intra-op threads and new threads") {
  const float tiny = 1e-39f;  // below FLT_MIN: a denormal
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  // LibTorch's own parallel ops (this file is not built with OpenMP, LibTorch is): a tensor large
  // enough to be split over both intra-op threads, which exist before the call.
  auto big = at::full({1 << 20}, tiny);
  auto flushed_sum = [&] { return (big * 1.0f).abs().sum().item<double>(); };
  CHECK(flushed_sum() > 0);
  REQUIRE(ablate::cli::set_flush_denormal(true));
  CHECK(times_one(tiny) == 0.0f);
  CHECK(flushed_sum() == 0);
  float in_new_thread = -1.0f;
  std::thread([&] { in_new_thread = times_one(tiny); }).join();
  CHECK(in_new_thread == 0.0f);
  // Off again: IEEE gradual underflow everywhere.
  REQUIRE(ablate::cli::set_flush_denormal(false));
  CHECK(times_one(tiny) == tiny);
  CHECK(flushed_sum() > 0);
  at::set_num_threads(threads);
}
