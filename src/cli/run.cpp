#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <malloc.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "data/core/errors.h"
#include "data/core/log.h"
#include "src/cli/commands.h"

namespace ablate::cli {

void apply_runtime_defaults(char** argv) {
  // OpenMP: LibTorch's intra-op threads are libgomp threads that wait at a barrier after every
  // parallel op, thousands per step. libgomp's default spins up to 300,000 iterations first:
  // fastest on an idle machine, but on one with more runnable threads than cores (shared CI,
  // a laptop compiling, the slots of a sweep) a spinning thread holds the core its descheduled
  // partner needs (measured: 1,046 tokens/s on the tiny model with 3 busy processes on 2 cores).
  // PASSIVE (no spinning) survives load but halves the idle-machine speed (12.7k vs 29.4k). A
  // bounded spin of 20,000 keeps 94 % of the idle speed (27.7k) and 2x the default under load
  // (1,951); docs/performance.md. libgomp reads the variables when it loads, before main, so
  // the process re-executes itself once; a policy or spin count the user set is kept.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr && std::getenv("GOMP_SPINCOUNT") == nullptr) {
    setenv("GOMP_SPINCOUNT", "20000", /*overwrite=*/0);
    execv("/proc/self/exe", argv);  // returns only on failure: then continue as we are
  }
  // malloc: tensors above glibc's dynamic mmap threshold are mmapped and unmapped on every
  // allocation, and freed heap tops are trimmed, so each step page-faults fresh zeroed memory
  // (5 % of the tiny model's profile in clear_page). Keep up to 32 MiB blocks (the largest
  // threshold glibc accepts) on the heap and never trim below 1 GiB: freed memory is reused by
  // the next step (+10 % tokens/s on the tiny model, docs/performance.md).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  // Denormal floats: see set_flush_denormal. ABLATE_FLUSH_DENORMAL=0 keeps IEEE gradual underflow.
  const char* fd = std::getenv("ABLATE_FLUSH_DENORMAL");
  set_flush_denormal(!(fd != nullptr && std::string(fd) == "0"));
}

bool set_flush_denormal(bool on) {
  // Denormal floats (|x| < 1.18e-38) take x86 arithmetic and MKL's sgemm into microcode, 10-100x
  // slower: a run whose gradients drift into that range crawls (seen on the natural-text tier at
  // lr 1e-2: 3k -> 0.4k tokens/s, docs/training.md). FTZ/DAZ flush them to zero, as TensorFlow
  // and XLA do on CPU. The mode is per thread: threads created later inherit it from their
  // creator on Linux, and the intra-op threads that exist already set it themselves (one chunk
  // each). Returns false where the processor has no such mode.
  const bool ok = at::globalContext().setFlushDenormal(on);
  if (ok && at::get_num_threads() > 1)
    at::parallel_for(0, at::get_num_threads(), 1, [on](int64_t, int64_t) { at::globalContext().setFlushDenormal(on); });
  return ok;
}

namespace {

// Running out of memory is the configuration's doing (model size, micro-batch, sequence length):
// a one-line error with exit status 2, like any other bad input.
int out_of_memory(const std::string& what) {
  std::string first = what.substr(0, what.find('\n'));
  std::cerr << "ablate: error: out of memory (" << first
            << "): reduce train.micro_batch, data.seq_len, probe.batch or the model\n";
  return 2;
}

}  // namespace

int run(int argc, char** argv) {
  apply_runtime_defaults(argv);
  CLI::App app{"Ablate: train and compare transformer ablations (spikes and sinks)", "ablate"};
  app.require_subcommand(1);
  app.failure_message(CLI::FailureMessage::simple);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace | debug | info | warn | error | off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->capture_default_str();
  Action action;
  add_config_commands(app, action);
  add_version_command(app, action);
  add_model_commands(app, action);
  add_data_commands(app, action);
  add_train_command(app, action);
  add_bench_command(app, action);
  add_analysis_commands(app, action);
  add_sweep_commands(app, action);
  add_launch_command(app, action);
  add_export_commands(app, action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "ablate: error: " << e.what() << " (see ablate --help)\n";
    return 2;
  }
  log::Level level = log::Level::info;
  log::parse_level(log_level, level);  // validated by the option's check
  log::set_level(level);
  try {
    return action ? action() : 0;
  } catch (const UserError& e) {
    std::cerr << "ablate: error: " << e.what() << "\n";
    return 2;
  } catch (const c10::OutOfMemoryError& e) {
    return out_of_memory(e.what_without_backtrace());
  } catch (const c10::Error& e) {
    std::cerr << "ablate: internal error (LibTorch): " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    return out_of_memory("std::bad_alloc");
  } catch (const std::exception& e) {
    std::cerr << "ablate: internal error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace ablate::cli
