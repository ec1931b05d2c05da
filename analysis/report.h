// Comparing runs: a JSON summary, a terminal table and one self-contained HTML page (inline CSS,
// inline SVG generated here; no scripts, fonts or images from the network).
//
// Inputs per run, as read from a run directory by the caller:
// * metrics: the metrics.jsonl records in order. Read keys: "step"; "loss" (training loss);
//   "val_loss" (validation); "probe" (an in-training compact probe: to_json(ProbeReport)).
//   Other keys are ignored, so the trainer may add its own.
// * probe: to_json(ProbeReport) of the final checkpoint, or null (then the last "probe" record
//   of metrics is used for the summary and the per-block / per-layer plots).
// * weight_diff: per-tensor differences against the first run (empty = not comparable).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace ablate::analysis {

struct WeightDiffRow {
  std::string name;            // parameter name
  double relative_norm = 0;    // ||W_run - W_ref|| / ||W_ref||
  double cosine = 0;           // cosine of the flattened tensors
};

struct RunData {
  std::string name;
  std::vector<nlohmann::json> metrics;
  nlohmann::json probe;  // null = none
  std::vector<WeightDiffRow> weight_diff;
};

// ---- SVG helpers -------------------------------------------------------------------------

struct Series {
  std::string name;
  std::vector<double> x, y;  // non-finite points are skipped
};

struct PlotOptions {
  std::string title, x_label, y_label;
  bool log_y = false;  // log10 axis; non-positive values are skipped
  int width = 560, height = 300;
};

// A line plot with axes, five ticks per axis and a legend; an empty plot says "no data".
std::string svg_line_plot(const std::vector<Series>& series, const PlotOptions& options);

struct HeatMapOptions {
  std::string title, row_label = "layer", col_label = "head";
  double lo = 0.0, hi = 1.0;  // colour scale (values clamped)
  int cell = 22;              // pixels per cell
};

// values[row][col]; each cell carries its value as a tooltip.
std::string svg_heat_map(const std::vector<std::vector<double>>& values, const HeatMapOptions& options);

std::string html_escape(const std::string& text);

// ---- Comparison --------------------------------------------------------------------------

// Per run: final and best validation loss, spike magnitude, sink mass, Sink^eps, and more from
// the probe (null where unknown). {"runs": [...]}.
nlohmann::json compare_json(const std::vector<RunData>& runs);
std::string compare_table(const std::vector<RunData>& runs);
// Sections (each a <section id=...>): summary, loss, spike-profile, sink-layers, alpha-maps,
// interventions, emergence, weights.
std::string render_html(const std::vector<RunData>& runs, const std::string& title);

}  // namespace ablate::analysis
