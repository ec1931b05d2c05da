// The training loop (docs/training.md): data → forward → masked cross entropy → backward
// (gradient accumulation over micro-batches) → clip → AdamW, with evaluation, in-training
// probes, checkpoints and exact resume.
//
// Invariants:
// * Resume is exact on CPU: a run resumed from the checkpoint at step N writes the same loss
//   records and ends with the same weights, bit for bit, as an uninterrupted run.
// * The training step never reads a value back to the host except on logging steps.
// * SIGINT / SIGTERM finish the current step, write a checkpoint and return `interrupted`;
//   a second signal exits immediately.
#pragma once

#include <cstdint>
#include <string>

#include "analysis/options.h"
#include "data/options.h"
#include "modules/options.h"
#include "trainers/distributed.h"
#include "trainers/options.h"

namespace ablate::trainers {

struct TrainerSetup {
  modules::ModelOptions model;  // max_seq_len filled in
  data::DataOptions data;
  TrainOptions train;            // micro_batch filled in
  analysis::ProbeOptions probe;
  int64_t seed = 0;
  std::string device = "auto";
  std::string run_dir;
  std::string config_yaml;       // the resolved configuration, stored with every checkpoint
  std::string git_commit = "unknown";
  std::string resume_from;       // checkpoint directory to continue from; empty = fresh start
  DistEnv dist;                  // this process's place in a data-parallel run (world 1 = alone)
};

struct TrainOutcome {
  int64_t step = 0;          // optimiser steps completed
  int64_t tokens = 0;        // training tokens consumed
  bool interrupted = false;  // stopped by a signal (a checkpoint was written)
  double last_val_loss = 0;  // NaN if never evaluated
  std::string checkpoint;    // the last checkpoint written
};

TrainOutcome train(const TrainerSetup& setup);

// Total optimiser steps of the schedule (train.tokens overrides train.steps).
int64_t total_steps(const TrainOptions& train, const data::DataOptions& data);

// Resolves "auto" to cuda when CUDA is usable, else cpu; UserError for an unusable device.
std::string resolve_device(const std::string& device);

}  // namespace ablate::trainers
