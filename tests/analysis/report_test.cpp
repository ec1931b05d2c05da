// The HTML report: every section present, well formed (balanced tags), no network references.
#include "analysis/report.h"

#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <vector>

using namespace ablate::analysis;
using nlohmann::json;

namespace {

// Checks that every opening tag is closed in order; void elements and "/>" need no close.
bool balanced(const std::string& html, std::string& why) {
  static const std::set<std::string> kVoid = {"meta", "br", "hr", "img", "input", "link", "col"};
  std::vector<std::string> stack;
  size_t i = 0;
  while ((i = html.find('<', i)) != std::string::npos) {
    const size_t end = html.find('>', i);
    if (end == std::string::npos) return why = "unterminated tag", false;
    std::string tag = html.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.empty() || tag[0] == '!') continue;  // doctype
    const bool closing = tag[0] == '/';
    const bool self = tag.back() == '/';
    std::string name = tag.substr(closing ? 1 : 0);
    name = name.substr(0, name.find_first_of(" /\t\n"));
    if (self || kVoid.count(name)) continue;
    if (!closing) {
      stack.push_back(name);
    } else {
      if (stack.empty() || stack.back() != name) {
        return why = "</" + name + "> closes <" + (stack.empty() ? "" : stack.back()) + ">", false;
      }
      stack.pop_back();
    }
  }
  if (!stack.empty()) return why = "<" + stack.back() + "> never closed", false;
  return true;
}

json probe_json(double spike, double mass) {
  return {{"spike", {{"magnitude", spike}, {"peak_block", 2}, {"massive_total", 4}, {"step_up", 2}, {"step_down", 4},
                     {"blocks", json::array({{{"top1", 1.0}, {"ratio", 2.0}}, {{"top1", 3.0}, {"ratio", 6.0}},
                                             {{"top1", spike}, {"ratio", 100.0}}, {{"top1", spike}, {"ratio", 90.0}},
                                             {{"top1", 2.0}, {"ratio", 4.0}}})}}},
          {"sink", {{"mass", mass}, {"sink_eps", 0.4}, {"epsilon", 0.3}, {"mass_per_layer", {mass, mass / 2}},
                    {"sink_eps_per_layer", {0.6, 0.2}},
                    {"alpha1", {{0.9, 0.1, 0.5}, {0.2, 0.35, 0.0}}}}}};
}

std::vector<RunData> two_runs() {
  std::vector<RunData> runs(2);
  runs[0].name = "pre";
  runs[1].name = "sandwich <b>";
  for (int r = 0; r < 2; ++r) {
    for (int step = 0; step <= 100; step += 10) {
      runs[r].metrics.push_back({{"split", "train"}, {"step", step}, {"loss", 5.0 - 0.02 * step - 0.1 * r}});
      if (step % 50 == 0) {
        runs[r].metrics.push_back({{"split", "val"}, {"step", step}, {"loss", 5.1 - 0.02 * step - 0.1 * r}});
        runs[r].metrics.push_back(
            {{"split", "probe"}, {"step", step}, {"probe", probe_json(10.0 + step, 0.1 + 0.003 * step)}});
      }
    }
  }
  runs[0].probe = probe_json(500.0, 0.45);
  runs[1].weight_diff = {{"layers.0.attn.wq.weight", 1.2, 0.1}, {"embed.weight", 1.4, 0.02}};
  return runs;
}

}  // namespace

TEST_CASE("HTML report has every section and is well formed", "[report]") {
  const auto runs = two_runs();
  const std::string html = render_html(runs, "pre vs sandwich");
  for (const char* id : {"summary", "loss", "spike-profile", "sink-layers", "alpha-maps", "interventions", "emergence", "weights"}) {
    CHECK(html.find(std::string("<section id=\"") + id + "\"") != std::string::npos);
  }
  std::string why;
  CHECK(balanced(html, why));
  INFO(why);
  CHECK(html.find("sandwich &lt;b&gt;") != std::string::npos);  // names are escaped
  CHECK(html.find("http://") == html.find("http://www.w3.org/2000/svg"));  // only the SVG namespace
  CHECK(html.find("https://") == std::string::npos);
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("layers.0.attn.wq.weight") != std::string::npos);
}

TEST_CASE("compare_json: final and best validation loss, probe values", "[report]") {
  const json j = compare_json(two_runs());
  REQUIRE(j["runs"].size() == 2);
  const json& a = j["runs"][0];
  CHECK(a["final_val_loss"].get<double>() == Approx(3.1));
  CHECK(a["best_val_loss"].get<double>() == Approx(3.1));
  CHECK(a["final_step"].get<int64_t>() == 100);
  CHECK(a["spike_magnitude"].get<double>() == Approx(500.0));  // the final probe wins
  CHECK(a["spike_ratio"].get<double>() == Approx(100.0));      // at the peak block
  const json& b = j["runs"][1];
  CHECK(b["spike_magnitude"].get<double>() == Approx(110.0));  // last in-training probe
  CHECK(b["sink_mass"].get<double>() == Approx(0.4));
  CHECK(b["weight_diff_mean_relative_norm"].get<double>() == Approx(1.3));
  const std::string table = compare_table(two_runs());
  CHECK(table.find("sandwich <b>") != std::string::npos);
  CHECK(table.find("500") != std::string::npos);
}

TEST_CASE("SVG helpers are well formed, including empty input", "[report]") {
  std::string why;
  Series s{"a", {0, 1, 2}, {1, 10, 100}};
  CHECK(balanced(svg_line_plot({s}, {"t", "x", "y", true}), why));
  CHECK(balanced(svg_line_plot({}, {"t", "x", "y"}), why));
  const std::string empty = svg_line_plot({Series{"n", {}, {}}}, {"t", "x", "y"});
  CHECK(empty.find("no data") != std::string::npos);
  const std::string heat = svg_heat_map({{0.0, 1.0}, {0.5, 2.0}}, {});
  CHECK(balanced(heat, why));
  CHECK(heat.find("rgb(8,48,107)") != std::string::npos);  // 1.0 and clamped 2.0: darkest
  CHECK(heat.find("rgb(255,255,255)") != std::string::npos);
}
