#include "trainers/bench.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#ifdef ABLATE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "data/core/errors.h"
#include "data/core/log.h"
#include "data/formats/safetensors.h"
#include "data/loader.h"
#include "modules/model.h"
#include "trainers/optimizer.h"
#include "trainers/step.h"

namespace ablate::trainers {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void sync(const at::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

// Peak resident set of this process (VmHWM), bytes; 0 if unreadable.
int64_t host_peak_rss() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;  // kB
  return 0;
}

// Sustained matmul rate of this CPU in `dtype` (fp32, or bf16 for a bf16-autocast run) with the
// current thread setting: the best of a few 1024³ products (2·n³ FLOPs each).
double measured_cpu_peak(at::ScalarType dtype) {
  const int64_t n = 1024;
  const auto opt = at::TensorOptions().dtype(dtype);
  auto a = at::randn({n, n}, opt), b = at::randn({n, n}, opt), c = at::empty({n, n}, opt);
  at::mm_out(c, a, b);
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    auto t0 = Clock::now();
    at::mm_out(c, a, b);
    best = std::min(best, seconds_since(t0));
  }
  return 2.0 * double(n) * n * n / best;
}

std::string human_bytes(int64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MiB", double(b) / (1024.0 * 1024.0));
  return buf;
}

// The resolved model options bench/reference/ needs (automatic values filled in).
nlohmann::json model_json(const modules::ModelOptions& o) {
  return {{"d_model", o.d_model},
          {"n_layers", o.n_layers},
          {"n_heads", o.n_heads},
          {"n_kv_heads", modules::effective_kv_heads(o)},
          {"head_dim", o.head_dim},
          {"vocab", o.vocab},
          {"tie_embeddings", o.tie_embeddings},
          {"norm", {{"type", o.norm.type}, {"placement", o.norm.placement}, {"qk_norm", o.norm.qk_norm}, {"eps", o.norm.eps}}},
          {"attention",
           {{"variant", o.attention.variant},
            {"gate", {{"kind", o.attention.gate.kind}, {"granularity", o.attention.gate.granularity}}}}},
          {"ffn", {{"type", o.ffn.type}, {"hidden", modules::effective_ffn_hidden(o)}}},
          {"position", {{"type", o.position.type}, {"base", o.position.base}}}};
}

namespace prof = torch::autograd::profiler;
namespace prof_impl = torch::profiler::impl;

std::set<prof_impl::ActivityType> trace_activities(bool cuda) {
  std::set<prof_impl::ActivityType> a{prof_impl::ActivityType::CPU};
  if (cuda) a.insert(prof_impl::ActivityType::CUDA);
  return a;
}

}  // namespace

std::vector<OpTime> self_times(std::vector<TraceEvent> events) {
  std::sort(events.begin(), events.end(), [](const TraceEvent& a, const TraceEvent& b) {
    if (a.thread != b.thread) return a.thread < b.thread;
    if (a.start_ns != b.start_ns) return a.start_ns < b.start_ns;
    return a.duration_ns > b.duration_ns;  // the enclosing event first
  });
  std::map<std::string, OpTime> by_name;
  struct Open {
    uint64_t end;
    OpTime* op;
  };
  std::vector<Open> stack;
  uint64_t thread = 0;
  for (const auto& e : events) {
    if (stack.empty() || e.thread != thread) stack.clear(), thread = e.thread;
    while (!stack.empty() && stack.back().end <= e.start_ns) stack.pop_back();
    auto& op = by_name[e.name];
    op.name = e.name;
    op.calls += 1;
    op.self_s += double(e.duration_ns) * 1e-9;
    if (!stack.empty()) stack.back().op->self_s -= double(e.duration_ns) * 1e-9;
    stack.push_back({e.start_ns + e.duration_ns, &op});
  }
  std::vector<OpTime> out;
  for (auto& [name, op] : by_name) out.push_back(op);
  std::sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.self_s > b.self_s; });
  return out;
}

int64_t matmul_parameters(const modules::ModelOptions& o) {
  // Lookup tables do no multiply-adds: embed.weight (unless it doubles as the LM head),
  // pos_embed, gate_pos_embed and sink_token. Everything else, lm_head included, does.
  modules::LanguageModel model(o);
  int64_t n = 0;
  for (const auto& p : model->named_parameters()) {
    const auto& name = p.key();
    const bool lookup = (name == "embed.weight" && !o.tie_embeddings) || name == "pos_embed.weight" ||
                        name == "gate_pos_embed.weight" || name == "sink_token";
    if (!lookup) n += p.value().numel();
  }
  return n;
}

double flops_per_token(const modules::ModelOptions& o, int64_t seq_len) {
  const double attn = 12.0 * double(o.n_layers) * double(seq_len) * double(o.n_heads * o.head_dim);
  return 6.0 * double(matmul_parameters(o)) + attn;
}

double known_gpu_peak(const std::string& name) {
  // Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s, no sparsity).
  struct Row {
    const char* match;
    double peak;
  };
  static const Row table[] = {{"H200", 989e12}, {"H100 SXM", 989e12}, {"H100 80GB HBM3", 989e12},
                              {"H100 PCIe", 756e12}, {"H100", 989e12},   {"A100", 312e12},
                              {"L40S", 362e12},      {"A10G", 70e12},    {"RTX 4090", 165e12}};
  for (const auto& r : table)
    if (name.find(r.match) != std::string::npos) return r.peak;
  return 0;
}

BenchResult bench(const TrainerSetup& s, const BenchOptions& opt) {
  if (opt.steps < 1) throw UserError("bench: --steps must be at least 1");
  if (opt.warmup < 0) throw UserError("bench: --warmup must be at least 0");
  if (!opt.trace_path.empty() && !std::ofstream(opt.trace_path))  // fail before the run, not after
    throw UserError("bench: --trace " + opt.trace_path + ": cannot create the file");
  const at::Device device(resolve_device(s.device));
  if (device.is_cuda()) {
    at::globalContext().setAllowTF32CuBLAS(s.train.tf32);
    at::globalContext().setAllowTF32CuDNN(s.train.tf32);
  }
  if (opt.threads > 0) at::set_num_threads(opt.threads);

  // The same construction order as train(): loader, seed, model, parameter groups, optimiser.
  data::Loader loader(s.data, s.train.micro_batch);
  auto [model, params] = build_train_model(s.model, s.seed, device, loader.vocab_needed(), s.data.tokenizer);
  data::NamedTensors dump;
  if (!opt.dump_path.empty())
    for (const auto& p : params) dump.emplace_back(p.name, p.tensor.detach().to(at::kCPU).clone());
  AdamW optimizer(params, s.train.optimizer);

  const int64_t total = total_steps(s.train, s.data);
  const int64_t n_micro = s.train.batch / s.train.micro_batch;
  const bool autocast = s.train.precision == "bf16";
  const bool cuda = device.is_cuda();
  if (autocast && !cuda) warn_if_cpu_bf16_slow();

  BenchResult r;
  r.device = device.str();
  r.parameters = modules::parameter_count(s.model);
  r.matmul_parameters = matmul_parameters(s.model);
  r.tokens_per_step = s.train.batch * s.data.seq_len;
  r.steps = opt.steps;
  r.warmup = opt.warmup;
  r.threads = at::get_num_threads();

  std::vector<at::Tensor> losses;
  std::vector<double> lrs;
  double data_s = 0, forward_s = 0, backward_s = 0, optimizer_s = 0;
  Clock::time_point timed_start;
  const auto phase = [&](double& acc, Clock::time_point& t) {
    if (opt.phase_sync) sync(device);
    auto now = Clock::now();
    acc += std::chrono::duration<double>(now - t).count();
    t = now;
  };
  for (int64_t step = 0; step < opt.warmup + opt.steps; ++step) {
    if (step == opt.warmup) {
      sync(device);
#ifdef ABLATE_WITH_CUDA
      if (cuda) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
      data_s = forward_s = backward_s = optimizer_s = 0;
      if (!opt.trace_path.empty()) {
        const prof_impl::ProfilerConfig config(prof_impl::ProfilerState::KINETO);
        const auto activities = trace_activities(cuda);
        prof::prepareProfiler(config, activities);
        prof::enableProfiler(config, activities);
      }
      timed_start = Clock::now();
    }
    const double lr = learning_rate(s.train.optimizer, s.train.schedule, step, total);
    lrs.push_back(lr);
    at::Tensor loss_sum = at::zeros({}, at::TensorOptions().device(device).dtype(at::kFloat));
    auto t = Clock::now();
    for (int64_t m = 0; m < n_micro; ++m) {
      auto batch = loader.next();
      if (!opt.dump_path.empty()) {
        const std::string p = "batch." + std::to_string(step * n_micro + m) + ".";
        dump.emplace_back(p + "inputs", batch.inputs);
        dump.emplace_back(p + "targets", batch.targets);
        dump.emplace_back(p + "loss_mask", batch.loss_mask);
      }
      auto inputs = batch.inputs.to(device, /*non_blocking=*/cuda);
      auto targets = batch.targets.to(device, cuda);
      auto mask = batch.loss_mask.to(device, cuda).reshape({-1});
      phase(data_s, t);
      at::Tensor loss;
      {
        AutocastScope scope(autocast, device.type());
        auto out = model->forward(inputs, without_logits());
        auto [sum, count] = lm_loss(out, targets, mask);
        loss = sum / count.clamp_min(1) / static_cast<double>(n_micro);
      }
      phase(forward_s, t);
      loss.backward();
      loss_sum += loss.detach();
      phase(backward_s, t);
    }
    clip_grad_norm(params, s.train.clip);
    optimizer.step(lr);
    optimizer.zero_grad();
    phase(optimizer_s, t);
    losses.push_back(loss_sum);
  }
  sync(device);
  r.seconds = seconds_since(timed_start);
  if (!opt.trace_path.empty()) {
    auto result = prof::disableProfiler();
    std::vector<TraceEvent> events;
    for (const auto& e : result->events())
      if (!e.isAsync() && e.deviceType() == c10::DeviceType::CPU)
        events.push_back({e.name(), e.startThreadId(), e.startNs(), e.durationNs()});
    r.top_ops = self_times(std::move(events));
    result->save(opt.trace_path);  // Kineto logs, never throws, on failure: check the file
    std::error_code ec;
    if (std::filesystem::file_size(opt.trace_path, ec) == 0 || ec)
      throw UserError("bench: --trace " + opt.trace_path + ": the profiler could not write the trace");
    r.trace_path = opt.trace_path;
  }
  r.tokens_per_s = double(r.tokens_per_step * opt.steps) / r.seconds;
  r.data_s = data_s / double(opt.steps);
  r.forward_s = forward_s / double(opt.steps);
  r.backward_s = backward_s / double(opt.steps);
  r.optimizer_s = optimizer_s / double(opt.steps);
  for (const auto& l : losses) r.losses.push_back(l.item<double>());

  r.flops_per_token = flops_per_token(s.model, s.data.seq_len);
  if (opt.peak_tflops > 0) {
    r.peak_flops = opt.peak_tflops * 1e12;
    r.peak_source = "--peak-tflops";
  } else if (cuda) {
#ifdef ABLATE_WITH_CUDA
    const std::string name = at::cuda::getDeviceProperties(device.index())->name;
    r.peak_flops = known_gpu_peak(name);
    r.peak_source = r.peak_flops > 0 ? name + " dense bf16 (data sheet)" : name + ": not in the table, give --peak-tflops";
#endif
  } else {
    r.peak_flops = measured_cpu_peak(autocast ? at::kBFloat16 : at::kFloat);
    r.peak_source = std::string("measured ") + (autocast ? "bf16" : "fp32") + " matmul (1024^3, " +
                    std::to_string(r.threads) + " threads)";
  }
  r.mfu = r.peak_flops > 0 ? r.tokens_per_s * r.flops_per_token / r.peak_flops : 0;
  r.host_peak_rss_bytes = host_peak_rss();
#ifdef ABLATE_WITH_CUDA
  if (cuda) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    r.device_peak_bytes = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  }
#endif

  if (!opt.dump_path.empty()) {
    dump.emplace_back("lr", at::tensor(lrs, at::TensorOptions().dtype(at::kDouble)));
    dump.emplace_back("losses", at::tensor(r.losses, at::TensorOptions().dtype(at::kDouble)));
    std::map<std::string, std::string> meta = {{"micro_batches_per_step", std::to_string(n_micro)},
                                               {"steps", std::to_string(opt.warmup + opt.steps)},
                                               {"clip", std::to_string(s.train.clip)},
                                               {"precision", s.train.precision},
                                               {"model", model_json(s.model).dump()},
                                               {"optimizer", nlohmann::json{{"beta1", s.train.optimizer.beta1},
                                                                            {"beta2", s.train.optimizer.beta2},
                                                                            {"eps", s.train.optimizer.eps},
                                                                            {"weight_decay", s.train.optimizer.weight_decay}}
                                                                 .dump()}};
    data::save_safetensors(opt.dump_path, dump, meta);
  }
  return r;
}

std::string format_report(const BenchResult& r) {
  std::ostringstream o;
  char buf[256];
  const double step = r.seconds / double(r.steps);
  o << "bench: " << r.parameters << " parameters (" << r.matmul_parameters << " in matmuls) on " << r.device << ", "
    << r.threads << " intra-op threads, " << r.tokens_per_step << " tokens/step, " << r.warmup << " warm-up + "
    << r.steps << " timed steps\n";
  std::snprintf(buf, sizeof(buf), "  tokens/s      %.0f\n  step          %.2f ms\n", r.tokens_per_s, step * 1e3);
  o << buf;
  auto row = [&](const char* name, double s) {
    std::snprintf(buf, sizeof(buf), "    %-11s %8.2f ms  %5.1f %%\n", name, s * 1e3, 100.0 * s / step);
    o << buf;
  };
  row("data", r.data_s);
  row("forward", r.forward_s);
  row("backward", r.backward_s);
  row("optimiser", r.optimizer_s);
  o << "  peak memory   host RSS " << human_bytes(r.host_peak_rss_bytes);
  if (r.device_peak_bytes > 0) o << ", device allocated " << human_bytes(r.device_peak_bytes);
  o << "\n";
  std::snprintf(buf, sizeof(buf), "  FLOPs/token   %.4g (6·N_matmul + 12·L·T·H·E)\n", r.flops_per_token);
  o << buf;
  if (r.peak_flops > 0) {
    std::snprintf(buf, sizeof(buf), "  MFU           %.1f %% of %.3g TFLOP/s (%s)\n", 100.0 * r.mfu, r.peak_flops / 1e12,
                  r.peak_source.c_str());
    o << buf;
  } else {
    o << "  MFU           unknown (" << r.peak_source << ")\n";
  }
  o << "  losses        ";
  for (size_t i = 0; i < r.losses.size() && i < 4; ++i) {
    std::snprintf(buf, sizeof(buf), "%s%.6f", i ? ", " : "", r.losses[i]);
    o << buf;
  }
  o << (r.losses.size() > 4 ? ", ...\n" : "\n");
  if (!r.trace_path.empty()) {
    double all = 0;
    for (const auto& op : r.top_ops) all += op.self_s;
    o << "  trace         " << r.trace_path << " (profiled: the times above include the profiler's cost)\n"
      << "  self time per step, top operators:\n";
    for (size_t i = 0; i < r.top_ops.size() && i < 20; ++i) {
      const auto& op = r.top_ops[i];
      std::snprintf(buf, sizeof(buf), "    %8.2f ms  %5.1f %%  %6.1f calls  %s\n", op.self_s * 1e3 / double(r.steps),
                    all > 0 ? 100.0 * op.self_s / all : 0.0, double(op.calls) / double(r.steps), op.name.c_str());
      o << buf;
    }
  }
  return o.str();
}

nlohmann::json to_json(const BenchResult& r) {
  return {{"framework", "ablate"},
          {"device", r.device},
          {"threads", r.threads},
          {"parameters", r.parameters},
          {"matmul_parameters", r.matmul_parameters},
          {"tokens_per_step", r.tokens_per_step},
          {"warmup", r.warmup},
          {"steps", r.steps},
          {"seconds", r.seconds},
          {"tokens_per_s", r.tokens_per_s},
          {"step_s", r.seconds / double(r.steps)},
          {"data_s", r.data_s},
          {"forward_s", r.forward_s},
          {"backward_s", r.backward_s},
          {"optimizer_s", r.optimizer_s},
          {"host_peak_rss_bytes", r.host_peak_rss_bytes},
          {"device_peak_bytes", r.device_peak_bytes},
          {"flops_per_token", r.flops_per_token},
          {"peak_flops", r.peak_flops},
          {"peak_source", r.peak_source},
          {"mfu", r.mfu},
          {"losses", r.losses},
          {"trace", r.trace_path},
          {"top_ops", [&] {
             auto a = nlohmann::json::array();
             for (const auto& op : r.top_ops) a.push_back({{"name", op.name}, {"self_s", op.self_s}, {"calls", op.calls}});
             return a;
           }()}};
}

}  // namespace ablate::trainers
