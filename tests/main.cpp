// The single Catch2 main shared by every test binary.
// Tests use tiny shapes, where torch's intra-op thread barriers cost more than they save on a
// loaded 2-core CI machine: one intra-op thread per test process.
#define CATCH_CONFIG_MAIN
#include <ATen/Parallel.h>
#include <catch2/catch.hpp>

namespace {
const bool single_threaded = [] {
  at::set_num_threads(1);
  return true;
}();
}  // namespace
