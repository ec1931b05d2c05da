// A temporary directory per test, removed afterwards.
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>

#include "data/formats/atomic_dir.h"

namespace ablate::test {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static std::atomic<int> n{0};
    path = std::filesystem::temp_directory_path() /
           ("ablate-test-data-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
    data::remove_tree(path.string());
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    data::remove_tree(path.string());
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

}  // namespace ablate::test
