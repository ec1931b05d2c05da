// `ablate bench`: the training step of trainers/trainer.cpp, timed. Builds the loader, the model
// and the optimiser exactly as `train` does (same seed, same parameter groups, same schedule),
// runs `warmup` untimed steps and `steps` timed ones, and reports tokens/s, the time per step
// split into data / forward / backward / optimiser, peak memory and MFU (docs/performance.md).
//
// Invariants:
// * With phase_sync the device is synchronised around each phase (only here, never in train),
//   so the split is real; tokens/s is measured over the same timed steps.
// * Losses are kept on the device and read once after the timed loop.
// * dump_path (optional) receives the initial weights, every micro-batch the run consumed and
//   the learning rate of every step, so that bench/reference/ can replay the run bit for bit.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "trainers/trainer.h"

namespace ablate::trainers {

struct BenchOptions {
  int64_t steps = 20;       // timed optimiser steps
  int64_t warmup = 3;       // untimed steps before them
  double peak_tflops = 0;   // > 0: the peak to compute MFU against; 0 = table (GPU) or measured (CPU)
  int threads = 0;          // > 0: at::set_num_threads (intra-op); 0 = keep LibTorch's default
  bool phase_sync = true;   // synchronise the device around each phase (the split needs it)
  std::string dump_path;    // safetensors: initial weights, batches, learning rates
  std::string trace_path;   // Chrome trace (Kineto) of the timed steps; also fills top_ops
};

// One operator's share of the traced steps (BenchOptions::trace_path): self time excludes the
// operators it called; totals are over all timed steps.
struct OpTime {
  std::string name;
  double self_s = 0;
  int64_t calls = 0;
};

struct BenchResult {
  std::string device, peak_source;
  int64_t parameters = 0, matmul_parameters = 0, tokens_per_step = 0, steps = 0, warmup = 0, threads = 0;
  double seconds = 0;  // wall time of the timed steps
  double tokens_per_s = 0;
  // Mean seconds per optimiser step of each phase (phase_sync) — sums to about seconds / steps.
  double data_s = 0, forward_s = 0, backward_s = 0, optimizer_s = 0;
  double flops_per_token = 0, peak_flops = 0, mfu = 0;
  int64_t host_peak_rss_bytes = 0, device_peak_bytes = 0;
  std::vector<double> losses;  // every step's loss, warm-up steps first
  std::vector<OpTime> top_ops;  // with trace_path: operators by self time, largest first
  std::string trace_path;
};

BenchResult bench(const TrainerSetup& setup, const BenchOptions& options);

// Training FLOPs per token (docs/performance.md): 6·N_matmul + 12·L·T·(H·E).
double flops_per_token(const modules::ModelOptions& model, int64_t seq_len);
// Parameters that multiply activations: all but the lookup tables (docs/performance.md).
int64_t matmul_parameters(const modules::ModelOptions& model);
// Dense bf16 (CUDA) peak of a known GPU by name, in FLOP/s; 0 when unknown.
double known_gpu_peak(const std::string& device_name);

// Self time per operator name from profiler events (name, thread, start ns, duration ns):
// events on one thread nest by time; each event's children are subtracted from it.
struct TraceEvent {
  std::string name;
  uint64_t thread = 0, start_ns = 0, duration_ns = 0;
};
std::vector<OpTime> self_times(std::vector<TraceEvent> events);

std::string format_report(const BenchResult& r);
nlohmann::json to_json(const BenchResult& r);

}  // namespace ablate::trainers
