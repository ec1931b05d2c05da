// `ablate bench CONFIG.yaml [--set k=v ...] [--steps N] [--warmup N] [--peak-tflops X]
//  [--threads N] [--no-phase-sync] [--dump FILE] [--trace FILE] [--json]`: times the training step
// (trainers/bench.h, docs/performance.md). Writes nothing but the optional dump and trace.
#include <cmath>
#include <cstdlib>
#include <iostream>

#include "src/cli/commands.h"
#include "src/config/config.h"
#include "trainers/bench.h"

namespace ablate::cli {
namespace {

struct BenchArgs {
  std::string config;
  std::vector<std::string> sets;
  trainers::BenchOptions options;
  bool json = false;
  bool no_phase_sync = false;
};

int run_bench(BenchArgs a) {
  auto loaded = config::load_file(a.config, a.sets);
  trainers::TrainerSetup setup = config::to_trainer_setup(loaded, /*run_dir=*/"");
  a.options.phase_sync = !a.no_phase_sync;
  auto result = trainers::bench(setup, a.options);
  if (a.json) std::cout << trainers::to_json(result).dump() << "\n";
  else std::cout << trainers::format_report(result);
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "time the training step: tokens/s, phase split, peak memory, MFU");
  cmd->add_option("CONFIG", args->config, "config file (YAML)")->required();
  cmd->add_option("--set", args->sets, "override a key: --set train.batch=8 (repeatable)")->take_all();
  cmd->add_option("--steps", args->options.steps, "timed optimiser steps")->capture_default_str();
  cmd->add_option("--warmup", args->options.warmup, "untimed steps first")->capture_default_str();
  cmd->add_option("--peak-tflops", args->options.peak_tflops,
                  "peak TFLOP/s for MFU (default: the GPU table, or a measured matmul rate on CPU)")
      ->check(CLI::Validator(
          [](std::string& text) {
            char* end = nullptr;
            const double v = std::strtod(text.c_str(), &end);
            return end != text.c_str() && *end == '\0' && std::isfinite(v) && v > 0 ? std::string()
                                                                                  : "expected a positive number, got " + text;
          },
          "POSITIVE"));
  cmd->add_option("--threads", args->options.threads, "intra-op threads (default: LibTorch's choice)")
      ->check(CLI::Range(1, 1024));
  cmd->add_flag("--no-phase-sync", args->no_phase_sync,
                "do not synchronise the device between phases (throughput only; the split is then not meaningful)");
  cmd->add_option("--dump", args->options.dump_path,
                  "write initial weights, batches and learning rates (safetensors) for bench/reference");
  cmd->add_option("--trace", args->options.trace_path,
                  "profile the timed steps: write a Chrome trace (chrome://tracing, Perfetto) and print the operators "
                  "with the most self time");
  cmd->add_flag("--json", args->json, "print one JSON object instead of the table");
  cmd->callback([args, &action] { action = [args] { return run_bench(*args); }; });
}

}  // namespace ablate::cli
