// Helpers shared by the test folders: a temporary directory per test, running the `ablate`
// binary (ABLATE_BIN_PATH) and reading files.
#pragma once

#include <catch2/catch.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "data/formats/atomic_dir.h"

namespace ablate::test {

// A fresh directory under the system temp dir, removed with everything in it afterwards.
struct ScratchDir {
  std::filesystem::path path;
  explicit ScratchDir(const std::string& tag) {
    static std::atomic<int> n{0};
    path = std::filesystem::temp_directory_path() /
           ("ablate-test-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
    data::remove_tree(path.string());
    std::filesystem::create_directories(path);
  }
  ~ScratchDir() { data::remove_tree(path.string()); }
  std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

struct CommandResult {
  int status;       // exit status; -1 if killed by a signal
  std::string out;  // stdout and stderr together
  double seconds;   // wall time
};

// Runs a shell command line, capturing stdout and stderr together.
inline CommandResult run_shell(const std::string& cmd) {
  const auto t0 = std::chrono::steady_clock::now();
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int rc = pclose(p);
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out, dt};
}

// Runs `[env] ablate ARGS` (ARGS is shell syntax; ENV like "A=1 B=2").
inline CommandResult run_ablate(const std::string& args, const std::string& env = "") {
  return run_shell(env + (env.empty() ? "" : " ") + std::string(ABLATE_BIN_PATH) + " " + args);
}

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace ablate::test
