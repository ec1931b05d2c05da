// A temporary directory per test, removed afterwards: tests/common.h's ScratchDir with paths as
// strings, as the data tests pass them to the readers and writers.
#pragma once

#include <string>

#include "tests/common.h"

namespace ablate::test {

struct TempDir : ScratchDir {
  TempDir() : ScratchDir("data") {}
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

}  // namespace ablate::test
