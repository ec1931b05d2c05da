// Checkpoints (docs/checkpoints.md). A checkpoint is a directory committed atomically
// (data/formats/atomic_dir.h):
//   run_dir/checkpoints/step_00000100/
//     model.safetensors      parameters by their stable names (modules/model.h)
//     optimizer.safetensors  AdamW state: <param>.exp_avg, <param>.exp_avg_sq, <param>.step
//     rng.safetensors        every RNG state: "cpu", "cuda:<i>" (uint8 tensors)
//     train_state.json       step, tokens, loader position, format version; on CPU, the
//                            arithmetic (cpu_threads, fused_cpu_kernels: cpu_arithmetic())
//     config.yaml            the resolved configuration the run was started with
//     provenance.json        git commit, versions, host, CPU, time
//     manifest.json          size and SHA-256 of every file above
//   run_dir/checkpoints/LATEST  name of the newest complete checkpoint
// Invariants: a checkpoint directory is complete or absent; a damaged one (checksum, size,
// missing file) is never loaded — it is skipped with a warning in favour of the previous one.
#pragma once

#include <ATen/Tensor.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ablate::trainers {

using Tensors = std::vector<std::pair<std::string, at::Tensor>>;

constexpr int kCheckpointFormat = 1;

struct Checkpoint {
  Tensors model, optimizer, rng;
  nlohmann::json train_state;  // {"format", "step", "tokens", "loader": {...}}
  std::string config_yaml;
  nlohmann::json provenance;
};

// Writes run_dir/checkpoints/step_<step>, points LATEST at it, keeps the newest `keep`.
// Returns the checkpoint directory.
std::string save_checkpoint(const std::string& run_dir, int64_t step, const Checkpoint& ckpt, int64_t keep);

// The newest complete checkpoint of a run directory (verifying manifests; damaged ones are
// skipped with a warning), or nullopt if there is none.
std::optional<std::string> find_latest_checkpoint(const std::string& run_dir);
// Whether run_dir/checkpoints holds any checkpoint directory, complete or damaged.
bool has_checkpoint_dirs(const std::string& run_dir);

// Reads a checkpoint directory (verifying it first). UserError naming the file on damage.
Checkpoint load_checkpoint(const std::string& dir);

// Accepts a checkpoint directory or a run directory (→ its latest checkpoint). UserError if
// neither holds a complete checkpoint.
std::string resolve_checkpoint(const std::string& path);

// Only model.safetensors + config.yaml of a checkpoint (for probe / compare / export).
struct CheckpointWeights {
  std::string dir;
  int64_t step = 0;
  Tensors model;
  std::string config_yaml;
};
CheckpointWeights load_weights(const std::string& path);

// Git commit, versions, host, time: recorded in every checkpoint and run directory.
nlohmann::json provenance(const std::string& git_commit);

// What decides a CPU run's arithmetic besides the processor (provenance's "cpu"):
// {"cpu_threads": intra-op threads, "fused_cpu_kernels": modules::kernels::fused_cpu_enabled()}. A change in
// either changes the order of floating-point sums, so the same seed trains a different run in the
// last bits from the first step (and a chaotic quantity such as the spike can end far apart:
// docs/training.md, "Bit-identical runs"). Recorded in run.json and in each checkpoint on CPU.
nlohmann::json cpu_arithmetic();

// The warning for resuming on CPU from a checkpoint whose train_state.json recorded another
// arithmetic than `now` (cpu_arithmetic()), naming what differs; "" when they agree or when the
// checkpoint predates the fields.
std::string cpu_arithmetic_warning(const nlohmann::json& saved, const nlohmann::json& now);

}  // namespace ablate::trainers
