// Options for training. Plain structs; field names are the YAML keys under `train.`.
#pragma once

#include <cstdint>
#include <string>

namespace ablate::trainers {

struct OptimizerOptions {
  std::string name = "adamw";
  double lr = 3e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;   // decoupled; applied to matrices only (not norms, biases, gains)
  std::string fused = "auto";  // auto | on | off: the fused ATen AdamW kernel
};

struct ScheduleOptions {
  std::string type = "cosine";  // constant | cosine | linear | wsd
  int64_t warmup = 100;         // linear warm-up steps
  double min_lr_ratio = 0.1;    // final lr = min_lr_ratio · lr (cosine, linear, wsd)
  double decay_fraction = 0.2;  // wsd: the last fraction of steps decays
};

struct EvalOptions {
  int64_t every = 100;  // 0 = only at the end
  int64_t batches = 8;
};

struct CheckpointOptions {
  int64_t every = 500;  // 0 = only at the end
  int64_t keep = 3;     // the last K complete checkpoints are kept
};

struct ProbeScheduleOptions {
  int64_t every = 0;  // 0 = no in-training probes
};

struct DistOptions {
  int64_t timeout = 600;    // seconds a rank waits for the others (rendezvous, every collective)
  int64_t check_every = 0;  // > 0: check that every rank holds the same parameters every N steps
};

struct LogOptions {
  int64_t every = 10;
};

struct TrainOptions {
  int64_t steps = 1000;
  int64_t tokens = 0;       // > 0: stop after this many training tokens (sets the schedule length)
  int64_t hard_stop = 0;    // > 0: stop at this step without changing the schedule
  int64_t batch = 16;       // sequences per optimiser step (global)
  int64_t micro_batch = 0;  // sequences per forward/backward; 0 = batch
  double clip = 1.0;        // global grad-norm clip; 0 = off
  std::string precision = "fp32";  // fp32 | bf16 (autocast on CUDA or CPU)
  bool tf32 = true;
  OptimizerOptions optimizer;
  ScheduleOptions schedule;
  EvalOptions eval;
  CheckpointOptions checkpoint;
  ProbeScheduleOptions probe;
  LogOptions log;
  DistOptions dist;
};

}  // namespace ablate::trainers
