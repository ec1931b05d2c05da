#include "analysis/report.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <limits>
#include <sstream>

namespace ablate::analysis {
namespace {

using nlohmann::json;

const char* const kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

std::string num(double v, int precision = 4) {
  if (!std::isfinite(v)) return "–";
  std::ostringstream o;
  o << std::setprecision(precision) << v;
  return o.str();
}

double number(const json& j, double fallback = std::numeric_limits<double>::quiet_NaN()) {
  return j.is_number() ? j.get<double>() : fallback;
}

// j[a][b]... or null.
json at_path(const json& j, std::initializer_list<const char*> path) {
  const json* cur = &j;
  for (const char* key : path) {
    if (!cur->is_object() || !cur->contains(key)) return nullptr;
    cur = &(*cur)[key];
  }
  return *cur;
}

// The probe that describes the run's end state: the final probe, else the last in-training one.
json final_probe(const RunData& run) {
  if (!run.probe.is_null()) return run.probe;
  for (auto it = run.metrics.rbegin(); it != run.metrics.rend(); ++it) {
    if (it->contains("probe")) return (*it)["probe"];
  }
  return nullptr;
}

Series metric_series(const RunData& run, const std::string& key, std::initializer_list<const char*> probe_path = {}) {
  Series s;
  s.name = run.name;
  for (const json& r : run.metrics) {
    if (!r.contains("step")) continue;
    json v = probe_path.size() ? (r.contains("probe") ? at_path(r["probe"], probe_path) : json()) : json();
    // metrics.jsonl (docs/training.md): train and val records both carry "loss", told apart by
    // "split"; "val_loss" names the validation series.
    const std::string split = r.value("split", std::string());
    if (!probe_path.size() && key == "val_loss" && split == "val") v = r["loss"];
    else if (!probe_path.size() && key == "loss" && split == "train") v = r["loss"];
    else if (!probe_path.size() && key != "loss" && key != "val_loss" && r.contains(key)) v = r[key];
    if (!v.is_number()) continue;
    s.x.push_back(number(r["step"]));
    s.y.push_back(v.get<double>());
  }
  return s;
}

std::string color(size_t i) { return kPalette[i % (sizeof(kPalette) / sizeof(kPalette[0]))]; }

}  // namespace

std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// ---- SVG ---------------------------------------------------------------------------------

std::string svg_line_plot(const std::vector<Series>& series, const PlotOptions& o) {
  const double left = 64, right = 150, top = 28, bottom = 44;
  const double pw = o.width - left - right, ph = o.height - top - bottom;
  auto ty = [&](double y) { return o.log_y ? std::log10(y) : y; };
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& s : series) {
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (o.log_y && s.y[i] <= 0)) continue;
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, ty(s.y[i])), y1 = std::max(y1, ty(s.y[i]));
    }
  }
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << o.width << "\" height=\"" << o.height
      << "\" viewBox=\"0 0 " << o.width << " " << o.height << "\" class=\"plot\">";
  svg << "<text x=\"" << left << "\" y=\"18\" class=\"title\">" << html_escape(o.title) << "</text>";
  if (!std::isfinite(x0)) {
    svg << "<text x=\"" << left + pw / 2 << "\" y=\"" << top + ph / 2 << "\" text-anchor=\"middle\">no data</text></svg>";
    return svg.str();
  }
  // Steps, blocks and layers are integers: tick them at integers, not at quarters of the range.
  bool integer_x = true;
  for (const auto& s : series)
    for (double x : s.x) integer_x = integer_x && (!std::isfinite(x) || x == std::round(x));
  if (x1 == x0) x0 -= 0.5, x1 += 0.5;
  const bool nonnegative = o.log_y || y0 >= 0;
  if (y1 == y0) y0 -= 0.5, y1 += 0.5;
  const double pad = 0.05 * (y1 - y0);
  y0 -= pad, y1 += pad;
  if (!o.log_y && nonnegative) y0 = std::max(y0, 0.0);  // a fraction or a norm never goes below 0
  std::vector<double> x_ticks;
  if (integer_x) {
    const double step = std::max(1.0, std::ceil((x1 - x0) / 4.0));
    for (double x = std::ceil(x0); x <= x1 + 1e-9; x += step) x_ticks.push_back(x);
  } else {
    for (int i = 0; i <= 4; ++i) x_ticks.push_back(x0 + (x1 - x0) * i / 4.0);
  }
  // Enough significant digits that neighbouring y ticks print differently.
  auto digits = [](double lo, double hi) {
    const double mag = std::max(std::abs(lo), std::abs(hi)), step = (hi - lo) / 4.0;
    if (!(step > 0) || !(mag > 0)) return 3;
    return std::clamp(static_cast<int>(std::ceil(std::log10(mag / step))) + 2, 3, 8);
  };
  const int y_digits = digits(y0, y1);
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + (1.0 - (ty(y) - y0) / (y1 - y0)) * ph; };
  svg << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
      << "\" fill=\"none\" stroke=\"#888\"/>";
  for (double fx : x_ticks) {
    const double gx = px(fx);
    svg << "<line x1=\"" << gx << "\" y1=\"" << top << "\" x2=\"" << gx << "\" y2=\"" << top + ph
        << "\" class=\"grid\"/>";
    svg << "<text x=\"" << gx << "\" y=\"" << top + ph + 14 << "\" text-anchor=\"middle\">"
        << num(fx, integer_x ? 12 : digits(x0, x1)) << "</text>";
  }
  for (int i = 0; i <= 4; ++i) {
    const double fy = y0 + (y1 - y0) * i / 4.0, gy = top + ph * (1.0 - i / 4.0);
    svg << "<line x1=\"" << left << "\" y1=\"" << gy << "\" x2=\"" << left + pw << "\" y2=\"" << gy
        << "\" class=\"grid\"/>";
    svg << "<text x=\"" << left - 4 << "\" y=\"" << gy + 4 << "\" text-anchor=\"end\">"
        << num(o.log_y ? std::pow(10.0, fy) : fy, o.log_y ? 3 : y_digits) << "</text>";
  }
  svg << "<text x=\"" << left + pw / 2 << "\" y=\"" << o.height - 6 << "\" text-anchor=\"middle\">"
      << html_escape(o.x_label) << "</text>";
  svg << "<text x=\"12\" y=\"" << top + ph / 2 << "\" text-anchor=\"middle\" transform=\"rotate(-90 12 "
      << top + ph / 2 << ")\">" << html_escape(o.y_label) << (o.log_y ? " (log)" : "") << "</text>";
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    std::ostringstream pts;
    size_t count = 0;
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (o.log_y && s.y[i] <= 0)) continue;
      pts << px(s.x[i]) << "," << py(s.y[i]) << " ";
      ++count;
    }
    if (count > 1) {
      svg << "<polyline fill=\"none\" stroke=\"" << color(k) << "\" stroke-width=\"1.8\" points=\"" << pts.str() << "\"/>";
    }
    if (count <= 30) {  // markers for short series (also makes single points visible)
      for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
        if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (o.log_y && s.y[i] <= 0)) continue;
        svg << "<circle cx=\"" << px(s.x[i]) << "\" cy=\"" << py(s.y[i]) << "\" r=\"2.5\" fill=\"" << color(k)
            << "\"><title>" << html_escape(s.name) << ": " << num(s.x[i]) << ", " << num(s.y[i]) << "</title></circle>";
      }
    }
    const double ly = top + 12 + 16.0 * static_cast<double>(k);
    svg << "<line x1=\"" << left + pw + 10 << "\" y1=\"" << ly - 4 << "\" x2=\"" << left + pw + 28 << "\" y2=\""
        << ly - 4 << "\" stroke=\"" << color(k) << "\" stroke-width=\"3\"/>";
    svg << "<text x=\"" << left + pw + 32 << "\" y=\"" << ly << "\">" << html_escape(s.name) << "</text>";
  }
  svg << "</svg>";
  return svg.str();
}

std::string svg_heat_map(const std::vector<std::vector<double>>& values, const HeatMapOptions& o) {
  const int rows = static_cast<int>(values.size());
  int cols = 0;
  for (const auto& r : values) cols = std::max(cols, static_cast<int>(r.size()));
  const int left = 44, top = 30;
  const int width = std::max(260, left + std::max(cols, 4) * o.cell + 70), height = top + std::max(rows, 1) * o.cell + 34;
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << width << " " << height << "\" class=\"heat\">";
  svg << "<text x=\"" << left << "\" y=\"18\" class=\"title\">" << html_escape(o.title) << "</text>";
  for (int r = 0; r < rows; ++r) {
    svg << "<text x=\"" << left - 4 << "\" y=\"" << top + r * o.cell + o.cell * 0.7 << "\" text-anchor=\"end\">" << r
        << "</text>";
    for (int c = 0; c < static_cast<int>(values[r].size()); ++c) {
      const double v = values[r][c];
      double f = std::isfinite(v) ? (v - o.lo) / (o.hi - o.lo) : 0.0;
      f = std::clamp(f, 0.0, 1.0);
      // white -> dark blue
      const int red = static_cast<int>(255 - f * (255 - 8)), green = static_cast<int>(255 - f * (255 - 48)),
                blue = static_cast<int>(255 - f * (255 - 107));
      svg << "<rect x=\"" << left + c * o.cell << "\" y=\"" << top + r * o.cell << "\" width=\"" << o.cell
          << "\" height=\"" << o.cell << "\" fill=\"rgb(" << red << "," << green << "," << blue
          << ")\" stroke=\"#fff\"><title>" << html_escape(o.row_label) << " " << r << ", " << html_escape(o.col_label)
          << " " << c << ": " << num(v) << "</title></rect>";
    }
  }
  for (int c = 0; c < cols; ++c) {
    svg << "<text x=\"" << left + c * o.cell + o.cell / 2 << "\" y=\"" << top + rows * o.cell + 14
        << "\" text-anchor=\"middle\">" << c << "</text>";
  }
  svg << "<text x=\"" << left << "\" y=\"" << top + rows * o.cell + 30 << "\">" << html_escape(o.col_label) << " → ("
      << html_escape(o.row_label) << " ↓), scale " << num(o.lo) << " … " << num(o.hi) << "</text>";
  svg << "</svg>";
  return svg.str();
}

// ---- Comparison --------------------------------------------------------------------------

json compare_json(const std::vector<RunData>& runs) {
  json out = json::array();
  for (const RunData& run : runs) {
    double final_val = std::numeric_limits<double>::quiet_NaN(), best_val = final_val;
    int64_t final_step = -1;
    for (const json& r : run.metrics) {
      if (r.value("split", std::string()) != "val" || !r.contains("loss") || !r["loss"].is_number()) continue;
      final_val = r["loss"].get<double>();
      best_val = std::isfinite(best_val) ? std::min(best_val, final_val) : final_val;
      if (r.contains("step") && r["step"].is_number()) final_step = r["step"].get<int64_t>();
    }
    const json p = final_probe(run);
    auto opt = [](double v) -> json { return std::isfinite(v) ? json(v) : json(nullptr); };
    json row = {{"name", run.name},
                {"final_step", final_step},
                {"final_val_loss", opt(final_val)},
                {"best_val_loss", opt(best_val)},
                {"final_val_perplexity", opt(std::exp(final_val))},
                {"spike_magnitude", at_path(p, {"spike", "magnitude"})},
                {"spike_ratio", nullptr},
                {"massive_total", at_path(p, {"spike", "massive_total"})},
                {"step_up", at_path(p, {"spike", "step_up"})},
                {"step_down", at_path(p, {"spike", "step_down"})},
                {"sink_mass", at_path(p, {"sink", "mass"})},
                {"sink_eps", at_path(p, {"sink", "sink_eps"})},
                {"sink_eps_share", at_path(p, {"sink", "sink_eps_share"})},
                {"sink_epsilon", at_path(p, {"sink", "epsilon"})},
                {"locality_alpha_corr", at_path(p, {"sink", "locality_alpha_corr"})},
                {"spike_token_cosine", at_path(p, {"geometry", "cosine"})},
                {"delimiter_sink_eps", at_path(p, {"sink", "delimiter", "sink_eps"})},
                {"loss", at_path(p, {"loss"})},
                {"delta_zero", at_path(p, {"interventions", "zero", "delta"})},
                {"delta_mean", at_path(p, {"interventions", "mean", "delta"})},
                {"delta_mask_sink", at_path(p, {"interventions", "mask_sink", "delta"})},
                {"delta_mask_first_position", at_path(p, {"interventions", "mask_first_position", "delta"})},
                {"delta_mask_both", at_path(p, {"interventions", "mask_both", "delta"})},
                {"intervention_block", at_path(p, {"interventions", "block"})},
                {"intervention_selection", at_path(p, {"interventions", "selection"})}};
    const json peak = at_path(p, {"spike", "peak_block"});
    const json blocks = at_path(p, {"spike", "blocks"});
    if (peak.is_number_integer() && blocks.is_array() && peak.get<int64_t>() >= 0 &&
        peak.get<size_t>() < blocks.size())
      row["spike_ratio"] = at_path(blocks[peak.get<size_t>()], {"ratio"});  // null unless an object with "ratio"
    if (!run.weight_diff.empty()) {
      double sum = 0;
      for (const auto& w : run.weight_diff) sum += w.relative_norm;
      row["weight_diff_mean_relative_norm"] = sum / static_cast<double>(run.weight_diff.size());
    }
    out.push_back(row);
  }
  return {{"runs", out}};
}

std::string compare_table(const std::vector<RunData>& runs) {
  const json j = compare_json(runs);
  std::ostringstream o;
  const char* keys[] = {"final_val_loss", "best_val_loss", "spike_magnitude", "spike_ratio",
                        "massive_total", "step_up", "step_down", "sink_mass", "sink_eps"};
  size_t w = 8;
  for (const auto& r : j["runs"]) w = std::max(w, r["name"].get<std::string>().size());
  o << std::left << std::setw(static_cast<int>(w) + 2) << "run";
  for (const char* k : keys) o << std::right << std::setw(16) << k;
  o << "\n";
  for (const auto& r : j["runs"]) {
    o << std::left << std::setw(static_cast<int>(w) + 2) << r["name"].get<std::string>();
    for (const char* k : keys) o << std::right << std::setw(16) << num(number(r[k]));
    o << "\n";
  }
  // Interventions (full probes only): probe-set loss change with massive activations zeroed or
  // set to their mean, and with the sink masked.
  bool any = false;
  for (const auto& r : j["runs"]) any = any || !r["delta_mask_sink"].is_null();
  if (any) {
    const char* ikeys[] = {"loss",           "delta_zero",          "delta_mean",        "delta_mask_sink",
                           "delta_mask_first_position", "delta_mask_both", "delimiter_sink_eps"};
    auto width = [](const char* k) { return static_cast<int>(std::max<size_t>(12, std::strlen(k) + 2)); };
    o << "\n" << std::left << std::setw(static_cast<int>(w) + 2) << "interventions";
    for (const char* k : ikeys) o << std::right << std::setw(width(k)) << k;
    o << "\n";
    for (const auto& r : j["runs"]) {
      o << std::left << std::setw(static_cast<int>(w) + 2) << r["name"].get<std::string>();
      for (const char* k : ikeys) o << std::right << std::setw(width(k)) << num(number(r[k]));
      o << "\n";
    }
  }
  return o.str();
}

std::string render_html(const std::vector<RunData>& runs, const std::string& title) {
  const json summary = compare_json(runs);
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" << html_escape(title)
    << "</title><style>"
       "body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1300px}"
       "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "th:first-child,td:first-child{text-align:left}th{background:#f2f2f2}"
       "svg{font-size:11px;margin:6px 12px 6px 0;background:#fff}.title{font-weight:bold;font-size:12px}"
       ".grid{stroke:#eee}section{margin-bottom:28px}.plots{display:flex;flex-wrap:wrap}"
       "p.note{color:#666;font-size:13px}"
       "</style></head><body>\n";
  h << "<h1>" << html_escape(title) << "</h1>\n";

  // Summary.
  h << "<section id=\"summary\"><h2>Summary</h2><table><tr><th>run</th><th>final val loss</th><th>best val loss</th>"
       "<th>spike magnitude</th><th>top1/median</th><th>massive</th><th>step-up</th><th>step-down</th>"
       "<th>sink mass</th><th>Sink<sup>ε</sup></th></tr>";
  for (const auto& r : summary["runs"]) {
    h << "<tr><td>" << html_escape(r["name"].get<std::string>()) << "</td>";
    for (const char* k : {"final_val_loss", "best_val_loss", "spike_magnitude", "spike_ratio", "massive_total",
                          "step_up", "step_down", "sink_mass", "sink_eps"}) {
      h << "<td>" << num(number(r[k])) << "</td>";
    }
    h << "</tr>";
  }
  h << "</table><p class=\"note\">Definitions: docs/metrics.md. Spike and sink numbers come from the final probe "
       "(or the last in-training probe).</p></section>\n";

  // Loss curves.
  {
    std::vector<Series> train, val;
    for (const RunData& run : runs) {
      train.push_back(metric_series(run, "loss"));
      val.push_back(metric_series(run, "val_loss"));
    }
    h << "<section id=\"loss\"><h2>Loss curves</h2><div class=\"plots\">"
      << svg_line_plot(train, {"training loss", "step", "loss"}) << svg_line_plot(val, {"validation loss", "step", "loss"})
      << "</div></section>\n";
  }

  // Spike profile across blocks.
  {
    std::vector<Series> top1, ratio;
    for (const RunData& run : runs) {
      Series a{run.name, {}, {}}, b{run.name, {}, {}};
      const json blocks = at_path(final_probe(run), {"spike", "blocks"});
      if (blocks.is_array()) {
        for (size_t i = 0; i < blocks.size(); ++i) {
          if (!blocks[i].is_object()) continue;  // a hand-edited probe.json: plot what is there
          a.x.push_back(static_cast<double>(i));
          a.y.push_back(number(blocks[i]["top1"]));
          b.x.push_back(static_cast<double>(i));
          b.y.push_back(number(blocks[i]["ratio"]));
        }
      }
      top1.push_back(a);
      ratio.push_back(b);
    }
    h << "<section id=\"spike-profile\"><h2>Spike profile across blocks</h2><div class=\"plots\">"
      << svg_line_plot(top1, {"top-1 |h| after each block", "block (0 = embedding; odd attention, even FFN)", "top-1", true})
      << svg_line_plot(ratio, {"top-1 / median |h|", "block", "ratio", true}) << "</div></section>\n";
  }

  // Sink per layer.
  {
    std::vector<Series> mass, eps;
    for (const RunData& run : runs) {
      const json p = final_probe(run);
      Series a{run.name, {}, {}}, b{run.name, {}, {}};
      const json m = at_path(p, {"sink", "mass_per_layer"}), e = at_path(p, {"sink", "sink_eps_per_layer"});
      for (size_t i = 0; m.is_array() && i < m.size(); ++i) a.x.push_back(double(i)), a.y.push_back(number(m[i]));
      for (size_t i = 0; e.is_array() && i < e.size(); ++i) b.x.push_back(double(i)), b.y.push_back(number(e[i]));
      mass.push_back(a);
      eps.push_back(b);
    }
    h << "<section id=\"sink-layers\"><h2>Sink per layer</h2><div class=\"plots\">"
      << svg_line_plot(mass, {"sink mass (attention on position 0)", "layer", "mass"})
      << svg_line_plot(eps, {"Sink^ε: fraction of heads with α₁ > ε", "layer", "fraction"}) << "</div></section>\n";
  }

  // Per-head alpha_1 maps.
  h << "<section id=\"alpha-maps\"><h2>Per-head α₁ maps</h2><div class=\"plots\">";
  for (const RunData& run : runs) {
    const json a = at_path(final_probe(run), {"sink", "alpha1"});
    if (!a.is_array()) {
      h << "<p class=\"note\">" << html_escape(run.name) << ": no probe</p>";
      continue;
    }
    std::vector<std::vector<double>> v;
    for (const auto& row : a) {
      v.emplace_back();
      for (const auto& x : row) v.back().push_back(number(x));
    }
    HeatMapOptions ho;
    ho.title = run.name + ": α₁ per (layer, head)";
    h << svg_heat_map(v, ho);
  }
  h << "</div></section>\n";

  // Emergence over training.
  {
    std::vector<Series> spike, mass, eps;
    for (const RunData& run : runs) {
      spike.push_back(metric_series(run, "", {"spike", "magnitude"}));
      mass.push_back(metric_series(run, "", {"sink", "mass"}));
      eps.push_back(metric_series(run, "", {"sink", "sink_eps"}));
    }
    h << "<section id=\"emergence\"><h2>Emergence over training</h2><div class=\"plots\">"
      << svg_line_plot(spike, {"spike magnitude", "step", "top-1 |h|", true})
      << svg_line_plot(mass, {"sink mass", "step", "mass"}) << svg_line_plot(eps, {"Sink^ε", "step", "fraction"})
      << "</div></section>\n";
  }

  // Interventions.
  h << "<section id=\"interventions\"><h2>Interventions</h2><table><tr><th>run</th><th>probe loss</th>"
       "<th>selection (block)</th><th>Δ zero</th><th>Δ mean</th><th>Δ mask sink</th><th>Δ mask position 0</th>"
       "<th>Δ mask both</th><th>first-delimiter Sink<sup>ε</sup></th></tr>";
  for (const auto& r : summary["runs"]) {
    h << "<tr><td>" << html_escape(r["name"].get<std::string>()) << "</td><td>" << num(number(r["loss"])) << "</td><td>";
    if (r["intervention_selection"].is_string())
      h << html_escape(r["intervention_selection"].get<std::string>()) << " (" << r["intervention_block"].dump() << ")";
    else
      h << "–";
    h << "</td>";
    for (const char* k : {"delta_zero", "delta_mean", "delta_mask_sink", "delta_mask_first_position", "delta_mask_both",
                          "delimiter_sink_eps"})
      h << "<td>" << num(number(r[k])) << "</td>";
    h << "</tr>";
  }
  h << "</table><p class=\"note\">Change of the mean next-token loss on the probe set (nats) under each intervention "
       "of docs/metrics.md; measured by the full probe of the compared checkpoint (blank: not measured, e.g. no "
       "massive entry, or the variant has no learned sink key).</p></section>\n";

  // Weight differences.
  h << "<section id=\"weights\"><h2>Weight differences</h2>";
  bool any = false;
  for (size_t i = 0; i < runs.size(); ++i) {
    if (runs[i].weight_diff.empty()) continue;
    any = true;
    h << "<h3>" << html_escape(runs[i].name) << " vs " << html_escape(runs[0].name)
      << "</h3><table><tr><th>parameter</th><th>‖ΔW‖/‖W<sub>ref</sub>‖</th><th>cosine</th></tr>";
    for (const auto& w : runs[i].weight_diff) {
      h << "<tr><td>" << html_escape(w.name) << "</td><td>" << num(w.relative_norm) << "</td><td>" << num(w.cosine)
        << "</td></tr>";
    }
    h << "</table>";
  }
  if (!any) h << "<p class=\"note\">No comparable weights (parameter names or shapes differ, or a single run).</p>";
  h << "</section>\n</body></html>\n";
  return h.str();
}

}  // namespace ablate::analysis
