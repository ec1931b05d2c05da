#include "trainers/checkpoint.h"

#include <ATen/Parallel.h>
#include <ATen/cpu/Utils.h>
#include <torch/headeronly/version.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/core/errors.h"
#include "data/core/log.h"
#include "data/formats/atomic_dir.h"
#include "data/formats/safetensors.h"
#include "modules/kernels.h"

namespace fs = std::filesystem;

namespace ablate::trainers {
namespace {

constexpr const char* kLatest = "LATEST";

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step_%08lld", static_cast<long long>(step));
  return buf;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UserError(path + ": cannot read the file");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Complete checkpoint directories under run_dir/checkpoints, newest first (by step in the name).
std::vector<fs::path> checkpoint_dirs(const std::string& run_dir) {
  std::vector<fs::path> dirs;
  fs::path root = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return dirs;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    auto name = e.path().filename().string();
    if (e.is_directory() && name.rfind("step_", 0) == 0 && name.find(".tmp") == std::string::npos) dirs.push_back(e.path());
  }
  std::sort(dirs.begin(), dirs.end(), [](const fs::path& a, const fs::path& b) { return a.filename() > b.filename(); });
  return dirs;
}

bool is_complete(const fs::path& dir, std::string* reason) {
  std::string problem = data::verify_manifest(dir.string());
  if (reason) *reason = problem;
  return problem.empty();
}

}  // namespace

std::string save_checkpoint(const std::string& run_dir, int64_t step, const Checkpoint& ckpt, int64_t keep) {
  fs::path root = fs::path(run_dir) / "checkpoints";
  fs::create_directories(root);
  fs::path final_dir = root / step_name(step);
  // Temporary directories left by a crashed writer are never complete: remove them. (One
  // trainer owns a run directory at a time; sweeps hold a lock per run.)
  {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root, ec))
      if (e.path().filename().string().find(".tmp-") != std::string::npos) data::remove_tree(e.path().string());
  }
  {
    data::AtomicDir dir(final_dir.string());
    std::map<std::string, std::string> meta{{"format", "ablate-model"}, {"step", std::to_string(step)}};
    data::save_safetensors(dir.path("model.safetensors"), ckpt.model, meta);
    data::save_safetensors(dir.path("optimizer.safetensors"), ckpt.optimizer, {{"format", "ablate-adamw"}});
    data::save_safetensors(dir.path("rng.safetensors"), ckpt.rng, {{"format", "ablate-rng"}});
    std::ofstream(dir.path("train_state.json")) << ckpt.train_state.dump(2) << "\n";
    std::ofstream(dir.path("config.yaml")) << ckpt.config_yaml;
    std::ofstream(dir.path("provenance.json")) << ckpt.provenance.dump(2) << "\n";
    dir.commit();
  }
  data::atomic_write_file((root / kLatest).string(), step_name(step) + "\n");
  // Keep the newest `keep` complete checkpoints; never delete the one just written.
  auto dirs = checkpoint_dirs(run_dir);
  int64_t kept = 0;
  for (const auto& d : dirs) {
    if (d == final_dir || (kept < keep && is_complete(d, nullptr))) {
      ++kept;
      continue;
    }
    data::remove_tree(d.string());
  }
  return final_dir.string();
}

std::optional<std::string> find_latest_checkpoint(const std::string& run_dir) {
  fs::path root = fs::path(run_dir) / "checkpoints";
  // LATEST is a hint; the directories themselves are the truth (a crash can leave LATEST
  // pointing at an older checkpoint, or at one that was damaged afterwards).
  for (const auto& d : checkpoint_dirs(run_dir)) {
    std::string reason;
    if (is_complete(d, &reason)) return d.string();
    log::warn(log::str("skipping damaged checkpoint ", d.string(), ": ", reason));
  }
  return std::nullopt;
}

bool has_checkpoint_dirs(const std::string& run_dir) { return !checkpoint_dirs(run_dir).empty(); }

Checkpoint load_checkpoint(const std::string& dir) {
  std::string reason;
  if (!is_complete(dir, &reason)) throw UserError(dir + ": damaged checkpoint: " + reason);
  Checkpoint c;
  fs::path d(dir);
  c.model = data::load_safetensors((d / "model.safetensors").string()).tensors;
  c.optimizer = data::load_safetensors((d / "optimizer.safetensors").string()).tensors;
  c.rng = data::load_safetensors((d / "rng.safetensors").string()).tensors;
  try {
    c.train_state = nlohmann::json::parse(read_text((d / "train_state.json").string()));
    c.provenance = nlohmann::json::parse(read_text((d / "provenance.json").string()));
  } catch (const nlohmann::json::exception& e) {
    throw UserError(dir + ": malformed JSON in checkpoint: " + e.what());
  }
  const std::string state_path = (d / "train_state.json").string();
  if (!c.train_state.is_object()) throw UserError(state_path + ": expected a JSON object");
  const auto format = c.train_state.find("format");
  if (format == c.train_state.end() || !format->is_number_integer() || format->get<int64_t>() != kCheckpointFormat)
    throw UserError(state_path + ": format: unsupported checkpoint format " +
                    (format == c.train_state.end() ? std::string("(missing)") : format->dump()));
  for (const char* key : {"step", "tokens"}) {
    const auto v = c.train_state.find(key);
    if (v == c.train_state.end() || !v->is_number_integer() || v->get<int64_t>() < 0)
      throw UserError(state_path + ": " + key + ": expected a non-negative integer, got " +
                      (v == c.train_state.end() ? std::string("nothing") : v->dump()));
  }
  c.config_yaml = read_text((d / "config.yaml").string());
  return c;
}

std::string resolve_checkpoint(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw UserError(path + ": no such run directory or checkpoint");
  if (fs::exists(fs::path(path) / data::kManifestName, ec)) {
    std::string reason;
    if (!is_complete(path, &reason)) throw UserError(path + ": damaged checkpoint: " + reason);
    return path;
  }
  auto latest = find_latest_checkpoint(path);
  if (!latest) throw UserError(path + ": no complete checkpoint (expected a run directory or a checkpoint directory)");
  return *latest;
}

CheckpointWeights load_weights(const std::string& path) {
  CheckpointWeights w;
  w.dir = resolve_checkpoint(path);
  auto file = data::load_safetensors((fs::path(w.dir) / "model.safetensors").string());
  w.model = std::move(file.tensors);
  auto it = file.metadata.find("step");
  w.step = 0;
  if (it != file.metadata.end()) {
    const std::string& v = it->second;
    auto res = std::from_chars(v.data(), v.data() + v.size(), w.step);
    if (res.ec != std::errc() || res.ptr != v.data() + v.size() || w.step < 0)
      throw UserError((fs::path(w.dir) / "model.safetensors").string() + ": __metadata__.step: expected a step number, got '" +
                      v + "'");
  }
  w.config_yaml = read_text((fs::path(w.dir) / "config.yaml").string());
  return w;
}

namespace {

// "name (widest vector ISA)" of this processor from LibTorch's cpuinfo, e.g. "AMD EPYC (avx2)" or
// "... (amx)": floating-point results (MKL's kernels, LibTorch's bf16 path) depend on it.
std::string cpu_description() {
  const auto caps = at::cpu::get_cpu_capabilities();
  auto has = [&](const char* key) {
    auto it = caps.find(key);
    return it != caps.end() && it->second.isBool() && it->second.toBool();
  };
  auto name = caps.find("cpu_name");
  const std::string model = name != caps.end() && name->second.isString() && !name->second.toStringRef().empty()
                                ? name->second.toStringRef()
                                : "unknown";
  const char* isa = has("amx_tile")      ? "amx"
                    : has("avx512_bf16") ? "avx512_bf16"
                    : has("avx512_f")    ? "avx512"
                    : has("avx2")        ? "avx2"
                    : has("sve")         ? "sve"
                    : has("neon")        ? "asimd"
                                         : "baseline";
  return model + " (" + isa + ")";
}

}  // namespace

nlohmann::json provenance(const std::string& git_commit) {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char when[64];
  std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return {{"git_commit", git_commit},
          {"ablate_version", ABLATE_VERSION},
          {"libtorch_version", TORCH_VERSION},
          {"host", host},
          {"cpu", cpu_description()},
          {"time", when}};
}

nlohmann::json cpu_arithmetic() {
  return {{"cpu_threads", at::get_num_threads()}, {"fused_cpu_kernels", modules::kernels::fused_cpu_enabled()}};
}

std::string cpu_arithmetic_warning(const nlohmann::json& saved, const nlohmann::json& now) {
  // A key counts only when both sides record it (checkpoints of older builds do not).
  auto differs = [&](const char* key) {
    return saved.is_object() && saved.contains(key) && now.contains(key) && saved[key] != now[key];
  };
  auto on_off = [](const nlohmann::json& b) { return b.get<bool>() ? "on" : "off"; };
  std::string diff;
  if (differs("cpu_threads"))
    diff = "written with " + saved["cpu_threads"].dump() + " CPU thread(s), resumed with " + now["cpu_threads"].dump();
  if (differs("fused_cpu_kernels"))
    diff += (diff.empty() ? "" : ", ") + std::string("written with the fused CPU kernels ") +
            on_off(saved["fused_cpu_kernels"]) + ", resumed with them " + on_off(now["fused_cpu_kernels"]) +
            " (ABLATE_FUSED_CPU)";
  if (diff.empty()) return "";
  return diff + ": the continuation trains correctly but not bit for bit as an uninterrupted run would "
                "(set OMP_NUM_THREADS / ABLATE_FUSED_CPU as before for an exact continuation)";
}

}  // namespace ablate::trainers
