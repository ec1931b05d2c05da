// `ablate probe RUN_DIR|CHECKPOINT` and `ablate compare A B [C ...]` (docs/metrics.md,
// "Probing and comparing runs").
//
// Invariants:
// * The model is rebuilt from the checkpoint's own config.yaml and its weights are loaded by
//   name; the probe set is rebuilt from the same data config with Loader::probe_sequences, so a
//   full probe with probe.sequences == probe.train_sequences reproduces the spike and sink
//   numbers of the in-training probe of the same step.
// * Only probe.* keys may be overridden: anything else would describe a different model.
// * A checkpoint is never modified except for the probe.json written next to it (not listed in
//   its manifest, so the checkpoint stays complete).
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>

#include "analysis/probe.h"
#include "analysis/report.h"
#include "data/core/errors.h"
#include "data/core/log.h"
#include "data/formats/atomic_dir.h"
#include "data/formats/metrics_log.h"
#include "data/loader.h"
#include "modules/model.h"
#include "src/cli/commands.h"
#include "src/config/config.h"
#include "trainers/checkpoint.h"
#include "trainers/step.h"
#include "trainers/trainer.h"

namespace fs = std::filesystem;

namespace ablate::cli {
namespace {

using nlohmann::json;

// A checkpoint resolved from a run directory or a checkpoint directory, with its run.
struct Target {
  std::string checkpoint;  // checkpoint directory
  std::string run_dir;     // run directory (may be empty when the checkpoint stands alone)
  std::string name;        // run directory name (or checkpoint name)
  trainers::CheckpointWeights weights;
};

Target resolve_target(const std::string& path) {
  Target t;
  t.weights = trainers::load_weights(path);  // UserError on a bad path or a damaged checkpoint
  t.checkpoint = t.weights.dir;
  const fs::path ckpt = fs::path(t.checkpoint).lexically_normal();
  // run_dir/checkpoints/step_N: the run is two levels up when it looks like one.
  fs::path run = (ckpt.has_filename() ? ckpt : ckpt.parent_path()).parent_path().parent_path();
  std::error_code ec;
  if (!run.empty() && fs::exists(run / "metrics.jsonl", ec)) {
    t.run_dir = run.string();
    t.name = run.filename().string();
  } else {
    t.name = (ckpt.has_filename() ? ckpt : ckpt.parent_path()).filename().string();
  }
  return t;
}

void check_probe_sets(const std::vector<std::string>& sets) {
  for (const auto& s : sets) {
    if (s.rfind("probe.", 0) != 0)
      throw UserError("--set " + s + ": only probe.* keys can be changed when probing a checkpoint");
  }
}

// The full probe of a checkpoint. Returns the record written to probe.json:
// {"run", "checkpoint", "step", "probe_s", "probe": to_json(report)} (like a metrics.jsonl probe
// record), and the report itself for the terminal table.
json probe_checkpoint(const Target& t, const std::vector<std::string>& sets, std::string* table) {
  const auto loaded = config::load_text(t.weights.config_yaml, t.checkpoint + "/config.yaml", sets);
  const auto& e = loaded.experiment;
  const at::Device device(trainers::resolve_device(e.device));
  data::Loader loader(e.data, /*micro_batch=*/1);
  const at::Tensor sequences = loader.probe_sequences(e.probe.sequences, e.probe.seq_len, e.probe.seed);

  modules::LanguageModel model(e.model);
  trainers::load_parameters(model, t.weights.model, t.checkpoint + "/model.safetensors");
  model->to(device);
  model->eval();

  const auto t0 = std::chrono::steady_clock::now();
  analysis::ProbeExtras extras;
  extras.delimiter_ids = e.probe.delimiters.empty() ? loader.delimiter_ids() : e.probe.delimiters;
  const analysis::ProbeReport report = analysis::run_probe(model, sequences.to(device), e.probe, /*compact=*/false, extras);
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (table) *table = analysis::to_table(report);
  return {{"run", t.name},
          {"checkpoint", t.checkpoint},
          {"step", t.weights.step},
          {"device", device.str()},
          {"probe_s", dt},
          {"probe", analysis::to_json(report)}};
}

// ---- ablate probe ------------------------------------------------------------------------

struct ProbeArgs {
  std::string path, out;
  std::vector<std::string> sets;
};

int run_probe_command(const ProbeArgs& a) {
  check_probe_sets(a.sets);
  const Target t = resolve_target(a.path);
  const std::string out = a.out.empty() ? (fs::path(t.checkpoint) / "probe.json").string() : a.out;
  data::prepare_output_file(out);  // before the probe, not after it
  std::string table;
  const json record = probe_checkpoint(t, a.sets, &table);
  std::cout << t.name << " @ step " << t.weights.step << " (" << t.checkpoint << ")\n" << table;
  data::atomic_write_file(out, record.dump(2) + "\n");
  std::cout << "wrote " << out << "\n";
  return 0;
}

// ---- ablate compare ----------------------------------------------------------------------

// Per tensor of `run` whose name and shape match one of `ref`: ||a - b|| / ||a|| (a = ref) and
// the cosine of the flattened tensors, in float64.
std::vector<analysis::WeightDiffRow> weight_diff(const trainers::Tensors& ref, const trainers::Tensors& run) {
  std::map<std::string, at::Tensor> by_name(run.begin(), run.end());
  std::vector<analysis::WeightDiffRow> rows;
  for (const auto& [name, a_raw] : ref) {
    auto it = by_name.find(name);
    if (it == by_name.end() || it->second.sizes() != a_raw.sizes()) continue;
    const at::Tensor a = a_raw.to(at::kCPU).to(at::kDouble).flatten();
    const at::Tensor b = it->second.to(at::kCPU).to(at::kDouble).flatten();
    const double na = a.norm().item<double>(), nb = b.norm().item<double>();
    const double nd = (a - b).norm().item<double>();
    analysis::WeightDiffRow row;
    row.name = name;
    row.relative_norm = na > 0 ? nd / na : (nd > 0 ? std::numeric_limits<double>::infinity() : 0.0);
    row.cosine = na > 0 && nb > 0 ? a.dot(b).item<double>() / (na * nb) : std::nan("");
    rows.push_back(row);
  }
  return rows;
}

struct CompareArgs {
  std::vector<std::string> paths;
  std::string out = "report.html", json_out;
  std::vector<std::string> sets;
};

int run_compare(const CompareArgs& a) {
  check_probe_sets(a.sets);
  if (a.paths.size() < 2) throw UserError("compare: give at least two run directories or checkpoints");
  std::vector<Target> targets;
  for (const auto& p : a.paths) targets.push_back(resolve_target(p));  // all paths checked before any work
  const std::string json_out = !a.json_out.empty() ? a.json_out : fs::path(a.out).replace_extension(".json").string();
  data::prepare_output_file(a.out);
  data::prepare_output_file(json_out);

  std::vector<analysis::RunData> runs;
  std::map<std::string, int> seen;
  for (const Target& t : targets) {
    analysis::RunData run;
    run.name = t.name;
    if (int n = seen[t.name]++; n > 0) run.name += " (" + std::to_string(n + 1) + ")";
    std::error_code ec;
    if (!t.run_dir.empty() && fs::exists(fs::path(t.run_dir) / "metrics.jsonl", ec)) {
      for (auto& r : data::read_metrics((fs::path(t.run_dir) / "metrics.jsonl").string())) {
        // Records after the compared checkpoint belong to a later state of the run.
        if (r.contains("step") && r["step"].is_number() && r["step"].get<int64_t>() > t.weights.step) continue;
        run.metrics.push_back(std::move(r));
      }
    }
    const fs::path saved = fs::path(t.checkpoint) / "probe.json";
    json record;
    if (a.sets.empty() && fs::exists(saved, ec)) {
      std::ifstream in(saved);
      try {
        record = json::parse(in);
      } catch (const json::exception& ex) {
        throw UserError(saved.string() + ": not JSON (" + ex.what() + "); delete it to re-probe");
      }
      if (!record.is_object() || !record.contains("probe") || !record["probe"].is_object())
        throw UserError(saved.string() + ": no \"probe\" object; delete it to re-probe");
      log::info(log::str(run.name, ": using ", saved.string()));
    } else {
      log::info(log::str(run.name, ": probing ", t.checkpoint));
      record = probe_checkpoint(t, a.sets, nullptr);
      if (a.sets.empty()) data::atomic_write_file(saved.string(), record.dump(2) + "\n");
    }
    run.probe = record["probe"];
    if (!runs.empty()) run.weight_diff = weight_diff(targets[0].weights.model, t.weights.model);
    runs.push_back(std::move(run));
  }

  std::cout << analysis::compare_table(runs);
  std::string title = "ablate compare:";
  for (size_t i = 0; i < runs.size(); ++i) title += (i ? " vs " : " ") + runs[i].name;
  data::atomic_write_file(a.out, analysis::render_html(runs, title));

  json summary = analysis::compare_json(runs);
  for (size_t i = 0; i < runs.size(); ++i) {
    json& row = summary["runs"][i];
    row["checkpoint"] = targets[i].checkpoint;
    row["run_dir"] = targets[i].run_dir;
    row["step"] = targets[i].weights.step;
    json diffs = json::array();
    for (const auto& w : runs[i].weight_diff) {
      diffs.push_back({{"name", w.name},
                       {"relative_norm", std::isfinite(w.relative_norm) ? json(w.relative_norm) : json()},
                       {"cosine", std::isfinite(w.cosine) ? json(w.cosine) : json()}});
    }
    row["weight_diff"] = diffs;
    row["probe"] = runs[i].probe;
  }
  data::atomic_write_file(json_out, summary.dump(2) + "\n");
  std::cout << "wrote " << a.out << " and " << json_out << "\n";
  return 0;
}

}  // namespace

void add_analysis_commands(CLI::App& app, Action& action) {
  auto pa = std::make_shared<ProbeArgs>();
  auto* probe = app.add_subcommand(
      "probe", "all spike and sink metrics of one checkpoint: a table on the terminal and JSON (docs/metrics.md)");
  probe->add_option("RUN_DIR|CHECKPOINT", pa->path, "run directory (its latest checkpoint) or checkpoint directory")
      ->required();
  probe->add_option("--out", pa->out, "JSON output (default: <checkpoint>/probe.json)");
  probe->add_option("--set", pa->sets, "override a probe key: --set probe.sequences=20 (repeatable)")->take_all();
  probe->callback([pa, &action] { action = [pa] { return run_probe_command(*pa); }; });

  auto ca = std::make_shared<CompareArgs>();
  auto* compare = app.add_subcommand(
      "compare", "runs or checkpoints side by side: terminal table, JSON and a self-contained HTML report");
  compare->add_option("RUNS", ca->paths, "two or more run directories or checkpoint directories")->required();
  compare->add_option("--out", ca->out, "HTML report")->capture_default_str();
  compare->add_option("--json", ca->json_out, "JSON summary (default: the report's name with .json)");
  compare->add_option("--set", ca->sets,
                      "override a probe key for every run (then saved probe.json files are neither used nor written)")
      ->take_all();
  compare->callback([ca, &action] { action = [ca] { return run_compare(*ca); }; });
}

}  // namespace ablate::cli
