// `ablate sweep plan | run | status | report | slurm SWEEP.yaml` (docs/sweeps.md).
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "data/core/errors.h"
#include "data/core/log.h"
#include "data/formats/atomic_dir.h"
#include "src/cli/commands.h"
#include "src/sweep/sweep.h"

namespace fs = std::filesystem;

namespace ablate::cli {
namespace {

struct SweepArgs {
  std::string file, out, csv, json_out, html, script, devices, time = "24:00:00";
  std::vector<std::string> sets;
  int slots = 1, retries = 0, only = -1, gpus = 0, cpus = 8;
  double progress = 60;
};

sweep::Plan load(const SweepArgs& a, const std::string& out_dir) {
  return sweep::make_plan(sweep::parse_sweep(a.file, a.sets), out_dir);
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    std::string item = s.substr(start, end - start);
    if (item.empty()) throw UserError("--devices '" + s + "': expected a list like 0,1,2");
    out.push_back(item);
    start = end + 1;
  }
  return out;
}

std::string self_path() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("ablate");
}

void add_common(CLI::App* cmd, SweepArgs& a, bool with_sets) {
  cmd->add_option("SWEEP", a.file, "sweep file (YAML)")->required();
  if (with_sets)
    cmd->add_option("--set", a.sets, "override a key in every point: --set train.steps=200 (repeatable)")->take_all();
}

}  // namespace

void add_sweep_commands(CLI::App& app, Action& action) {
  auto* sweep = app.add_subcommand("sweep", "ablation sweeps: plan, run, status, report, slurm (docs/sweeps.md)");
  sweep->require_subcommand(1);
  auto args = std::make_shared<SweepArgs>();

  auto* plan = sweep->add_subcommand("plan", "list the points and validate every resolved config");
  add_common(plan, *args, true);
  plan->add_option("--out", args->out, "runs directory (default: <sweep dir>/runs/<name>)");
  plan->callback([args, &action] {
    action = [args] {
      std::cout << sweep::plan_table(load(*args, args->out));
      return 0;
    };
  });

  auto* run = sweep->add_subcommand("run", "train every point not yet finished; resumes interrupted ones");
  add_common(run, *args, true);
  run->add_option("--out", args->out, "runs directory (default: <sweep dir>/runs/<name>)");
  run->add_option("--slots", args->slots, "points trained at once")->check(CLI::Range(1, 1024))->capture_default_str();
  run->add_option("--devices", args->devices, "CUDA devices, one per slot in turn: 0,1,2 (sets CUDA_VISIBLE_DEVICES)");
  run->add_option("--retries", args->retries, "retries of a failed point")->check(CLI::Range(0, 100))->capture_default_str();
  run->add_option("--only", args->only, "run only point I (as numbered by `sweep plan`; Slurm array task)")
      ->check(CLI::Range(0, 1 << 30));
  run->add_option("--progress", args->progress, "seconds between progress lines of the running points (0: none)")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  run->callback([args, &action] {
    action = [args] {
      auto p = load(*args, args->out);
      sweep::RunOptions o;
      o.slots = args->slots;
      o.retries = args->retries;
      o.only = args->only;
      o.progress_every = args->progress;
      if (!args->devices.empty()) o.devices = split_list(args->devices);
      log::info(log::str("sweep ", p.sweep.name, ": ", p.points.size(), " points in ", p.runs_dir));
      auto s = sweep::run_plan(p, o);
      log::info(log::str("sweep ", p.sweep.name, ": ", s.done, " trained, ", s.skipped, " already finished, ", s.failed,
                         " failed"));
      for (const auto& f : s.failures) std::cerr << "failed: " << f << "\n";
      return s.failed > 0 ? 1 : 0;
    };
  });

  auto* status = sweep->add_subcommand("status", "done / running / failed / pending per point, with progress");
  add_common(status, *args, true);
  status->add_option("--out", args->out, "runs directory (default: <sweep dir>/runs/<name>)");
  status->callback([args, &action] {
    action = [args] {
      std::cout << sweep::status_table(load(*args, args->out));
      return 0;
    };
  });

  auto* report = sweep->add_subcommand("report", "one table over the grid (mean ± std over seeds), CSV/JSON, HTML");
  add_common(report, *args, true);
  report->add_option("--runs", args->out, "runs directory (default: <sweep dir>/runs/<name>)");
  report->add_option("--out", args->html, "HTML report to write (default: <runs dir>/report.html)");
  report->add_option("--csv", args->csv, "write the variant table as CSV");
  report->add_option("--json", args->json_out, "write points, variants and data-order check as JSON");
  report->callback([args, &action] {
    action = [args] {
      auto p = load(*args, args->out);
      auto j = sweep::report_json(p);
      std::cout << sweep::report_table(j);
      const std::string html = !args->html.empty() ? args->html : (fs::path(p.runs_dir) / "report.html").string();
      data::make_parent_dirs(fs::absolute(html).string());
      data::atomic_write_file(html, sweep::report_html(p, j));
      std::cout << "report: " << html << "\n";
      if (!args->csv.empty()) data::atomic_write_file(args->csv, sweep::report_csv(j));
      if (!args->json_out.empty()) data::atomic_write_file(args->json_out, j.dump(2) + "\n");
      return 0;
    };
  });

  auto* slurm = sweep->add_subcommand("slurm", "write a Slurm job-array script: task i runs point i");
  add_common(slurm, *args, true);
  slurm->add_option("--out", args->script, "script to write (default: print it)");
  slurm->add_option("--runs", args->out, "runs directory (default: <sweep dir>/runs/<name>)");
  slurm->add_option("--gpus", args->gpus, "GPUs per task (#SBATCH --gres=gpu:N)")->capture_default_str();
  slurm->add_option("--cpus", args->cpus, "CPUs per task")->capture_default_str();
  slurm->add_option("--time", args->time, "time limit per task")->capture_default_str();
  slurm->callback([args, &action] {
    action = [args] {
      auto p = load(*args, args->out);
      sweep::SlurmOptions o;
      o.binary = self_path();
      o.gpus = args->gpus;
      o.cpus = args->cpus;
      o.time = args->time;
      for (const auto& s : args->sets) o.extra_args.insert(o.extra_args.end(), {"--set", s});
      if (!args->out.empty()) o.extra_args.insert(o.extra_args.end(), {"--out", fs::absolute(args->out).string()});
      data::make_dirs(p.runs_dir);  // Slurm opens --output before the script runs
      std::string script = sweep::slurm_script(p, o);
      if (args->script.empty()) {
        std::cout << script;
      } else {
        data::atomic_write_file(args->script, script);
        fs::permissions(args->script, fs::perms::owner_exec | fs::perms::group_exec, fs::perm_options::add);
        std::cout << "wrote " << args->script << " (sbatch " << args->script << ")\n";
      }
      return 0;
    };
  });
}

}  // namespace ablate::cli
