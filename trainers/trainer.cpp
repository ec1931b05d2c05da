#include "trainers/trainer.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>
#include <torch/utils.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>

#include "analysis/probe.h"
#include "data/core/errors.h"
#include "data/core/log.h"
#include "data/formats/atomic_dir.h"
#include "data/formats/metrics_log.h"
#include "data/loader.h"
#include "modules/model.h"
#include "trainers/checkpoint.h"
#include "trainers/distributed.h"
#include "trainers/optimizer.h"
#include "trainers/step.h"

namespace fs = std::filesystem;

namespace ablate::trainers {
namespace {

using Clock = std::chrono::steady_clock;

// --- Signals: finish the step, checkpoint, exit; a second signal exits at once ---------------
// "Second" means more than a second after the first: a cluster that signals every process of a
// job while `ablate launch` forwards the same signal delivers it twice within milliseconds,
// which must still end with a checkpoint.

std::atomic<int> g_signal{0};
std::atomic<int64_t> g_signal_ns{0};

extern "C" void on_signal(int sig) {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);  // async-signal-safe
  const int64_t ns = int64_t{now.tv_sec} * 1000000000 + now.tv_nsec;
  if (g_signal.exchange(sig) != 0 && ns - g_signal_ns.load() > 1000000000) std::_Exit(128 + sig);
  if (g_signal_ns.load() == 0) g_signal_ns = ns;
}

class SignalScope {
 public:
  SignalScope() {
    g_signal = 0;
    g_signal_ns = 0;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalScope() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

// --- Progress: a live line on a terminal, plain log lines otherwise ---------------------------

class Progress {
 public:
  Progress() : tty_(isatty(STDERR_FILENO) == 1 && log::level() <= log::Level::info) {}
  void update(const std::string& line) {
    if (tty_) {
      std::fprintf(stderr, "\r\033[K%s", line.c_str());
      std::fflush(stderr);
      shown_ = true;
    } else {
      log::info(line);
    }
  }
  // Before any other log line, so that it does not land on the live line.
  void clear() {
    if (tty_ && shown_) {
      std::fprintf(stderr, "\r\033[K");
      std::fflush(stderr);
      shown_ = false;
    }
  }
  void finish() {
    if (tty_ && shown_) std::fprintf(stderr, "\n");
    shown_ = false;
  }

 private:
  bool tty_;
  bool shown_ = false;
};

std::string human_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof(buf), "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
  else if (s >= 60) std::snprintf(buf, sizeof(buf), "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
  else std::snprintf(buf, sizeof(buf), "%llds", (long long)s);
  return buf;
}

std::string human_count(double x) {
  char buf[32];
  if (x >= 1e6) std::snprintf(buf, sizeof(buf), "%.2fM", x / 1e6);
  else if (x >= 1e3) std::snprintf(buf, sizeof(buf), "%.1fk", x / 1e3);
  else std::snprintf(buf, sizeof(buf), "%.0f", x);
  return buf;
}

// Test hook for failure handling (docs/distributed.md): ABLATE_FAULT=kill:RANK:STEP makes that
// rank SIGKILL itself after that step, hang:RANK:STEP makes it sleep forever.
void inject_fault(int rank, int64_t step) {
  static const std::string spec = [] {
    const char* v = std::getenv("ABLATE_FAULT");
    return std::string(v ? v : "");
  }();
  if (spec.empty()) return;
  char kind[8] = {0};
  int fault_rank = -1;
  long long fault_step = -1;
  if (std::sscanf(spec.c_str(), "%7[a-z]:%d:%lld", kind, &fault_rank, &fault_step) != 3) return;
  if (fault_rank != rank || fault_step != step) return;
  log::warn(log::str("ABLATE_FAULT: rank ", rank, " ", kind, " after step ", step));
  if (std::string(kind) == "kill") std::raise(SIGKILL);
  if (std::string(kind) == "hang")
    for (;;) pause();
}

std::vector<at::Tensor> tensors_of(const std::vector<NamedParameter>& params) {
  std::vector<at::Tensor> out;
  out.reserve(params.size());
  for (const auto& p : params) out.push_back(p.tensor);
  return out;
}

struct Batches {
  at::Tensor inputs, targets, mask;
};

Batches to_device(const data::Batch& b, const at::Device& device) {
  bool nb = device.is_cuda();
  return {b.inputs.to(device, /*non_blocking=*/nb), b.targets.to(device, nb), b.loss_mask.to(device, nb)};
}

Tensors rng_state(const at::Device& device) {
  Tensors out;
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    out.emplace_back("cpu", gen.get_state());
  }
  if (device.is_cuda()) {
    auto gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    out.emplace_back("cuda:" + std::to_string(device.index()), gen.get_state());
  }
  return out;
}

// Rank r > 0 takes the states saved as "rank<r>/<name>"; rank 0 the plain names.
void restore_rng(const Tensors& saved, const at::Device& device, const std::string& source, int rank) {
  Tensors states;
  const std::string prefix = "rank" + std::to_string(rank) + "/";
  for (const auto& [name, state] : saved) {
    if (rank == 0 && name.rfind("rank", 0) != 0) states.emplace_back(name, state);
    // Rank r's CUDA state was saved under rank 0's device name; it belongs to r's own device.
    if (rank > 0 && name.rfind(prefix, 0) == 0) {
      std::string own = name.substr(prefix.size());
      if (own.rfind("cuda", 0) == 0 && device.is_cuda()) own = "cuda:" + std::to_string(device.index());
      states.emplace_back(own, state);
    }
  }
  if (rank > 0 && states.empty())
    log::warn(log::str(source, ": no RNG state saved for rank ", rank, "; its generators restart from the seed"));
  for (const auto& [name, state] : states) {
    if (name == "cpu") {
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(state);
    } else if (device.is_cuda() && name == "cuda:" + std::to_string(device.index())) {
      auto gen = at::globalContext().defaultGenerator(device);
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(state);
    } else if (name.rfind("cuda", 0) == 0) {
      log::warn(log::str(source, ": RNG state '", name, "' does not match this device (", device.str(),
                         "): CUDA random streams restart"));
    }
  }
}

double evaluate(modules::LanguageModel& model, const data::Loader& loader, const TrainerSetup& s,
                const at::Device& device) {
  at::NoGradGuard no_grad;
  AutocastScope autocast(s.train.precision == "bf16", device.type());
  const int64_t B = s.train.micro_batch;
  const int64_t available = (loader.validation_size() + B - 1) / B;
  const int64_t n = std::min(s.train.eval.batches, available);
  at::Tensor sum = at::zeros({}, at::TensorOptions().device(device).dtype(at::kFloat));
  at::Tensor count = at::zeros({}, sum.options());
  for (int64_t i = 0; i < n; ++i) {
    auto b = to_device(loader.validation_batch(i, B), device);
    auto out = model->forward(b.inputs, without_logits());
    auto [s_i, c_i] = lm_loss(out, b.targets, b.mask);
    sum += s_i;
    count += c_i;
  }
  return (sum / count.clamp_min(1)).item<double>();
}

}  // namespace

int64_t total_steps(const TrainOptions& train, const data::DataOptions& data) {
  if (train.tokens > 0) {
    const int64_t per_step = train.batch * data.seq_len;
    return std::max<int64_t>(1, (train.tokens + per_step - 1) / per_step);
  }
  return train.steps;
}

std::string resolve_device(const std::string& device) {
  const bool cuda = torch::cuda::is_available();
  if (device == "auto") return cuda ? "cuda:0" : "cpu";
  if (device == "cpu") return device;
  if (!cuda) throw UserError("device: '" + device + "' requested but CUDA is not usable on this machine");
  std::string d = device == "cuda" ? "cuda:0" : device;
  const auto index = std::stoll(d.substr(5));
  if (index >= static_cast<int64_t>(torch::cuda::device_count()))
    throw UserError("device: '" + device + "' requested but only " + std::to_string(torch::cuda::device_count()) +
                    " CUDA device(s) are visible");
  return d;
}

TrainOutcome train(const TrainerSetup& s) {
  const DistEnv& env = s.dist;
  const bool main_rank = env.rank == 0;
  at::Device device(resolve_device(s.device));
  if (env.active() && device.is_cuda()) {
    if (env.local_rank >= static_cast<int>(torch::cuda::device_count()))
      throw UserError("LOCAL_RANK " + std::to_string(env.local_rank) + ": only " +
                      std::to_string(torch::cuda::device_count()) + " CUDA device(s) are visible");
    device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  }
  if (device.is_cuda()) {
    at::globalContext().setAllowTF32CuBLAS(s.train.tf32);
    at::globalContext().setAllowTF32CuDNN(s.train.tf32);
  }
  // Rank 0 owns the run directory (log, records, checkpoints); the other ranks only warn.
  if (main_rank) {
    fs::create_directories(s.run_dir);
    log::set_file((fs::path(s.run_dir) / "train.log").string());
  } else if (log::level() < log::Level::warn) {
    log::set_level(log::Level::warn);
  }

  // The global batch splits evenly over the ranks; each rank's share over its micro-batches.
  const int64_t world = env.world;
  if (s.train.batch % world != 0)
    throw UserError("train.batch: " + std::to_string(s.train.batch) + " sequences do not split evenly over " +
                    std::to_string(world) + " processes");
  const int64_t rank_batch = s.train.batch / world;
  const int64_t micro_batch = std::min(s.train.micro_batch, rank_batch);
  if (rank_batch % micro_batch != 0)
    throw UserError("train.micro_batch: " + std::to_string(micro_batch) + " does not divide the " +
                    std::to_string(rank_batch) + " sequences per process (train.batch " + std::to_string(s.train.batch) +
                    " over " + std::to_string(world) + " processes)");
  data::Loader loader(s.data, micro_batch, env.rank, env.world);
  auto [model, params] = build_train_model(s.model, s.seed, device, loader.vocab_needed(), s.data.tokenizer);
  AdamW optimizer(params, s.train.optimizer);
  std::unique_ptr<DataParallel> dp;
  if (env.active()) {
    log::info(log::str("data parallel: rank ", env.rank, " of ", env.world, " (", device.is_cuda() ? "NCCL" : "Gloo",
                       "), rendezvous at ", env.master_addr, ":", env.master_port));
    dp = std::make_unique<DataParallel>(env, device, std::chrono::milliseconds(s.train.dist.timeout * 1000));
  }

  const int64_t total = total_steps(s.train, s.data);
  const int64_t stop_at = s.train.hard_stop > 0 ? std::min(s.train.hard_stop, total) : total;
  const int64_t n_micro = rank_batch / micro_batch;
  const int64_t tokens_per_step = s.train.batch * s.data.seq_len;
  int64_t step = 0, tokens = 0;

  // bf16 autocast on a CPU without a fast bf16 matrix path is a large slowdown, not a speed-up: say so
  // on every start (a resumed run may be on another host; run.json keeps the first start's ratio).
  // The run still trains as configured: its id and results depend on the precision.
  double bf16_slowdown = 0;
  if (main_rank && !device.is_cuda() && s.train.precision == "bf16") {
    bf16_slowdown = warn_if_cpu_bf16_slow();
    if (cpu_bf16_warning(bf16_slowdown).empty())
      log::info(log::str("train.precision bf16: a bf16 matrix product takes ", bf16_slowdown,
                         "x the fp32 time on this CPU"));
  }

  const std::string metrics_path = (fs::path(s.run_dir) / "metrics.jsonl").string();
  if (s.resume_from.empty()) {
    if (main_rank) {
      std::error_code ec;
      fs::remove(metrics_path, ec);  // a fresh start owns the run directory's records
      nlohmann::json info = {{"parameters", modules::parameter_count(s.model)},
                             {"device", device.str()},
                             {"fused_adamw", optimizer.fused()},
                             {"total_steps", total},
                             {"tokens_per_step", tokens_per_step},
                             {"data_order_hash", loader.order_hash(std::min<int64_t>(256, loader.samples_per_epoch()))},
                             {"world_size", env.world},
                             {"provenance", provenance(s.git_commit)}};
      if (bf16_slowdown > 0) info["cpu_bf16_matmul_slowdown"] = bf16_slowdown;
      if (!device.is_cuda()) info.update(cpu_arithmetic());
      data::atomic_write_file((fs::path(s.run_dir) / "run.json").string(), info.dump(2) + "\n");
    }
  } else {
    auto ckpt = load_checkpoint(s.resume_from);
    load_parameters(model, ckpt.model, s.resume_from + "/model.safetensors");
    optimizer.load_state(ckpt.optimizer, s.resume_from + "/optimizer.safetensors");
    restore_rng(ckpt.rng, device, s.resume_from + "/rng.safetensors", env.rank);
    try {
      const int64_t saved_world = ckpt.train_state.value("world_size", int64_t{1});
      if (saved_world != env.world)
        throw UserError(s.resume_from + "/train_state.json: written by " + std::to_string(saved_world) +
                        " process(es), this run has " + std::to_string(env.world) +
                        ": resume with the same number of processes (gradient sums over another split differ "
                        "in the last bits, so the continuation would not be exact)");
      if (main_rank && !device.is_cuda())
        if (auto w = cpu_arithmetic_warning(ckpt.train_state, cpu_arithmetic()); !w.empty())
          log::warn(s.resume_from + "/train_state.json: " + w);
      step = ckpt.train_state.at("step").get<int64_t>();
      tokens = ckpt.train_state.at("tokens").get<int64_t>();
      loader.restore(data::LoaderState::from_json(ckpt.train_state.at("loader")));
    } catch (const nlohmann::json::exception& e) {
      throw UserError(s.resume_from + "/train_state.json: " + e.what());
    }
    if (main_rank) data::truncate_metrics_after(metrics_path, step);
    log::info(log::str("resuming from ", s.resume_from, " at step ", step, " (", human_count(tokens), " tokens)"));
  }
  if (main_rank && !s.config_yaml.empty())
    data::atomic_write_file((fs::path(s.run_dir) / "config.yaml").string(), s.config_yaml);
  std::optional<data::MetricsLog> metrics_log;
  if (main_rank) metrics_log.emplace(metrics_path);
  auto record = [&](const nlohmann::json& r) {
    if (metrics_log) metrics_log->write(r);
  };
  const std::vector<at::Tensor> param_tensors = tensors_of(params);
  auto check_replicas = [&](const std::string& what) { dp->check_same(what, tensors_digest(param_tensors)); };
  if (dp) {
    // Same seed, same checkpoint: the replicas must start equal; then the Reducer keeps them so.
    check_replicas("initial parameters");
    dp->attach(param_tensors);
  }

  at::Tensor probe_seqs;
  analysis::ProbeExtras probe_extras;
  if (s.train.probe.every > 0) {
    probe_seqs = loader.probe_sequences(s.probe.train_sequences, s.probe.seq_len, s.probe.seed);
    probe_extras.delimiter_ids = s.probe.delimiters.empty() ? loader.delimiter_ids() : s.probe.delimiters;
  }

  log::info(log::str("training ", modules::parameter_count(s.model), " parameters on ", device.str(), ": steps ",
                     step, " -> ", stop_at, " of ", total, ", ", tokens_per_step, " tokens/step, ", n_micro,
                     " micro-batch(es) of ", micro_batch, world > 1 ? log::str(" on each of ", world, " processes") : "",
                     ", AdamW ", optimizer.fused() ? "fused" : "foreach"));

  TrainOutcome outcome;
  outcome.last_val_loss = std::nan("");
  SignalScope signals;
  Progress progress;
  const bool autocast = s.train.precision == "bf16";
  auto interval_start = Clock::now();
  int64_t interval_tokens = 0;
  double train_seconds = 0, probe_seconds = 0;
  int64_t probes_run = 0;
  const auto run_start = Clock::now();
  const int64_t start_step = step;

  auto checkpoint = [&]() {
    progress.clear();
    Checkpoint c;
    c.model = {};
    for (auto& item : model->named_parameters(/*recurse=*/true)) c.model.emplace_back(item.key(), item.value());
    c.optimizer = optimizer.state();
    c.rng = rng_state(device);
    if (dp) {
      // Every rank's generators: rank r > 0 as "rank<r>/<name>".
      check_replicas(log::str("parameters at step ", step));
      const Tensors mine = c.rng;
      for (const auto& [name, state] : mine) {
        const auto all = dp->allgather(state);
        for (int r = 1; r < env.world; ++r) c.rng.emplace_back("rank" + std::to_string(r) + "/" + name, all[r]);
      }
    }
    if (!main_rank) return;
    c.train_state = {{"format", kCheckpointFormat},
                     {"step", step},
                     {"tokens", tokens},
                     {"total_steps", total},
                     {"world_size", env.world},
                     {"loader", loader.state().to_json()}};
    if (!device.is_cuda()) c.train_state.update(cpu_arithmetic());
    c.config_yaml = s.config_yaml;
    c.provenance = provenance(s.git_commit);
    metrics_log->sync();
    outcome.checkpoint = save_checkpoint(s.run_dir, step, c, s.train.checkpoint.keep);
    log::info(log::str("checkpoint ", outcome.checkpoint));
  };

  bool stop_now = false;  // a signal reached some rank (agreed by every rank each step)
  while (step < stop_at && !stop_now) {
    const auto step_start = Clock::now();
    const double lr = learning_rate(s.train.optimizer, s.train.schedule, step, total);
    at::Tensor loss_sum = at::zeros({}, at::TensorOptions().device(device).dtype(at::kFloat));
    for (int64_t m = 0; m < n_micro; ++m) {
      const bool sync = m + 1 == n_micro;
      auto b = to_device(loader.next(), device);
      if (dp) dp->before_forward(sync);
      at::Tensor loss;
      {
        AutocastScope scope(autocast, device.type());
        auto out = model->forward(b.inputs, without_logits());
        auto [sum, count] = lm_loss(out, b.targets, b.mask);
        loss = sum / count.clamp_min(1) / static_cast<double>(n_micro);
      }
      if (dp) dp->before_backward(loss, sync);
      loss.backward();
      loss_sum += loss.detach();
    }
    at::Tensor grad_norm = clip_grad_norm(params, s.train.clip);
    optimizer.step(lr);
    optimizer.zero_grad();
    ++step;
    tokens += tokens_per_step;
    interval_tokens += tokens_per_step;
    inject_fault(env.rank, step);
    stop_now = g_signal != 0;
    if (dp) {
      stop_now = dp->any(stop_now);
      if (s.train.dist.check_every > 0 && step % s.train.dist.check_every == 0)
        check_replicas(log::str("parameters at step ", step));
    }
    train_seconds += std::chrono::duration<double>(Clock::now() - step_start).count();

    const bool last = step == stop_at;
    if (step % s.train.log.every == 0 || last) {
      if (dp) dp->mean_(loss_sum);  // the ranks' mean = the loss of the global batch
      const double loss = loss_sum.item<double>();  // the one host sync of a logging step
      const double gn = grad_norm.item<double>();
      const double elapsed = std::chrono::duration<double>(Clock::now() - interval_start).count();
      const double tps = interval_tokens / std::max(elapsed, 1e-9);
      if (!std::isfinite(loss)) {
        progress.clear();
        log::error(log::str("step ", step, ": loss is ", loss, "; stopping (the last checkpoint is intact)"));
        throw std::runtime_error("non-finite training loss at step " + std::to_string(step));
      }
      record({{"split", "train"}, {"step", step}, {"tokens", tokens}, {"loss", loss}, {"lr", lr},
                     {"grad_norm", gn}, {"tokens_per_s", tps}});
      const double per_step = train_seconds / std::max<int64_t>(1, step - start_step);
      progress.update(log::str("step ", step, "/", stop_at, " | loss ", std::to_string(loss).substr(0, 6), " | lr ",
                               lr, " | ", human_count(tps), " tok/s | ETA ",
                               human_duration(per_step * static_cast<double>(stop_at - step))));
      interval_start = Clock::now();
      interval_tokens = 0;
    }
    if (main_rank && ((s.train.eval.every > 0 && step % s.train.eval.every == 0) || last)) {
      model->eval();
      const double val = evaluate(model, loader, s, device);
      model->train();
      outcome.last_val_loss = val;
      record({{"split", "val"}, {"step", step}, {"tokens", tokens}, {"loss", val}, {"ppl", std::exp(val)}});
      progress.clear();
      log::info(log::str("step ", step, ": val loss ", val, " (ppl ", std::exp(val), ")"));
    }
    if (main_rank && s.train.probe.every > 0 && (step % s.train.probe.every == 0 || last)) {
      const auto t0 = Clock::now();
      auto report = analysis::run_probe(model, probe_seqs.to(device), s.probe, /*compact=*/true, probe_extras);
      model->train();
      const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
      probe_seconds += dt;
      ++probes_run;
      record({{"split", "probe"}, {"step", step}, {"tokens", tokens}, {"probe_s", dt},
                     {"probe", analysis::to_json(report)}});
    }
    if ((s.train.checkpoint.every > 0 && step % s.train.checkpoint.every == 0) || last || stop_now) checkpoint();
  }
  progress.finish();
  outcome.step = step;
  outcome.tokens = tokens;
  outcome.interrupted = stop_now && step < stop_at;
  const double wall = std::chrono::duration<double>(Clock::now() - run_start).count();
  if (probes_run > 0 && train_seconds > 0)
    log::info(log::str("in-training probes (", probes_run, ") took ", probe_seconds, " s = ", 100.0 * probe_seconds / train_seconds,
                       " % of training-step time"));
  if (outcome.interrupted) {
    log::info(log::str("interrupted at step ", step, "; resume with: ablate ",
                       env.active() ? log::str("launch --nproc ", env.world, " -- ") : std::string(), "train --resume ",
                       s.run_dir));
  } else {
    log::info(log::str("done: step ", step, ", ", human_count(tokens), " tokens in ", human_duration(wall),
                       step < total ? " (hard_stop; the schedule continues on resume with a larger hard_stop)" : ""));
  }
  log::set_file("");
  return outcome;
}

}  // namespace ablate::trainers
