// `ablate probe` and `ablate compare` end to end on two tiny CPU runs that differ only in norm
// placement (pre vs sandwich): the probe reproduces the in-training probe record of the same step,
// compare writes a self-contained report with every section, bad inputs exit 2 with one line.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/common.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using ablate::test::run_ablate;

size_t count_lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}


// A tiny model and run: a few seconds on one CPU core. probe.train_sequences == probe.sequences,
// so the in-training (compact) probe and `ablate probe` (full) see the same probe set.
const char* kConfig = R"(seed: 3
device: cpu
model: {d_model: 32, n_layers: 2, n_heads: 2, head_dim: 16, vocab: 34}
data: {source: synthetic, seq_len: 16, synthetic: {vocab: 32, val_sequences: 16}}
train:
  steps: 6
  batch: 4
  eval: {every: 3}
  checkpoint: {every: 3}
  probe: {every: 3}
  log: {every: 1}
probe: {sequences: 8, batch: 4, train_sequences: 8, seq_len: 16}
)";

// Trains the two runs once for every test case of this file.
struct Runs {
  ablate::test::ScratchDir scratch{"analysis"};
  fs::path root = scratch.path, pre, sandwich;
  bool ok = false;
  Runs() {
    std::ofstream(root / "tiny.yaml") << kConfig;
    pre = root / "pre";
    sandwich = root / "sandwich";
    auto a = run_ablate("--log-level warn train " + (root / "tiny.yaml").string() + " --run-dir " + pre.string() +
                 " --set model.norm.placement=pre");
    auto b = run_ablate("--log-level warn train " + (root / "tiny.yaml").string() + " --run-dir " + sandwich.string() +
                 " --set model.norm.placement=sandwich");
    ok = a.status == 0 && b.status == 0;
    if (!ok) WARN("training failed:\n" << a.out << "\n" << b.out);
  }
};

Runs& runs() {
  static Runs r;
  return r;
}

json probe_record(const fs::path& run_dir, int64_t step) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    json r = json::parse(line);
    if (r.value("split", "") == "probe" && r.value("step", -1) == step) return r["probe"];
  }
  return nullptr;
}

// Start and end tags balance (void elements and self-closing tags aside); comments and the
// doctype are skipped. Returns the first problem, or "".
std::string html_problem(const std::string& html) {
  static const std::vector<std::string> kVoid = {"meta", "br", "hr", "img", "input", "link", "wbr", "col"};
  std::vector<std::string> stack;
  size_t i = 0;
  while ((i = html.find('<', i)) != std::string::npos) {
    const size_t end = html.find('>', i);
    if (end == std::string::npos) return "unterminated tag at " + std::to_string(i);
    const std::string tag = html.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.empty()) return "empty tag";
    if (tag[0] == '!') continue;
    const bool closing = tag[0] == '/';
    const size_t name_start = closing ? 1 : 0;
    const size_t name_end = tag.find_first_of(" \t\n/", name_start);
    const std::string name = tag.substr(name_start, name_end == std::string::npos ? std::string::npos : name_end - name_start);
    if (closing) {
      if (stack.empty() || stack.back() != name) return "</" + name + "> closes <" + (stack.empty() ? "" : stack.back()) + ">";
      stack.pop_back();
    } else if (tag.back() != '/' && std::find(kVoid.begin(), kVoid.end(), name) == kVoid.end()) {
      stack.push_back(name);
    }
  }
  return stack.empty() ? "" : "<" + stack.back() + "> never closed";
}

}  // namespace

TEST_CASE("probe reproduces the in-training probe of the same step") {
  auto& r = runs();
  REQUIRE(r.ok);
  const fs::path out = r.root / "pre_probe.json";
  auto p = run_ablate("--log-level warn probe " + r.pre.string() + " --out " + out.string());
  INFO(p.out);
  REQUIRE(p.status == 0);
  CHECK(p.out.find("spike magnitude") != std::string::npos);
  CHECK(p.out.find("Sink_1^") != std::string::npos);
  REQUIRE(fs::exists(out));
  const json rec = json::parse(ablate::test::read_text(out));
  CHECK(rec["step"] == 6);
  CHECK(rec["run"] == "pre");
  const json full = rec["probe"];
  CHECK(full["compact"] == false);
  CHECK(full.contains("geometry"));
  const json trained = probe_record(r.pre, 6);
  REQUIRE(trained.is_object());
  CHECK(trained["compact"] == true);
  // The compact-relevant values, compared exactly (JSON keeps doubles round-trip exact).
  CHECK(full["spike"]["magnitude"] == trained["spike"]["magnitude"]);
  CHECK(full["spike"]["peak_block"] == trained["spike"]["peak_block"]);
  CHECK(full["spike"]["blocks"] == trained["spike"]["blocks"]);
  CHECK(full["sink"]["mass"] == trained["sink"]["mass"]);
  CHECK(full["sink"]["mass_per_layer"] == trained["sink"]["mass_per_layer"]);
  CHECK(full["sink"]["sink_eps"] == trained["sink"]["sink_eps"]);
  CHECK(full["sink"]["sink_eps_per_layer"] == trained["sink"]["sink_eps_per_layer"]);
  CHECK(full["sink"]["alpha1"] == trained["sink"]["alpha1"]);
  CHECK(full["sink"]["alpha1_share"] == trained["sink"]["alpha1_share"]);
  CHECK(full["sink"]["sink_eps_share_per_layer"] == trained["sink"]["sink_eps_share_per_layer"]);

  // An earlier checkpoint, given directly, matches its own step; the default output lies beside it.
  const fs::path ckpt3 = r.pre / "checkpoints" / "step_00000003";
  REQUIRE(fs::exists(ckpt3));
  p = run_ablate("--log-level warn probe " + ckpt3.string());
  INFO(p.out);
  REQUIRE(p.status == 0);
  const json rec3 = json::parse(ablate::test::read_text(ckpt3 / "probe.json"));
  CHECK(rec3["step"] == 3);
  CHECK(rec3["probe"]["spike"]["magnitude"] == probe_record(r.pre, 3)["spike"]["magnitude"]);
  CHECK(rec3["probe"]["sink"]["sink_eps_per_layer"] == probe_record(r.pre, 3)["sink"]["sink_eps_per_layer"]);

  // Synthetic data has no delimiters (noted); probe.delimiters names ids to use instead.
  CHECK(!full["sink"].contains("delimiter"));
  const fs::path delim_out = r.root / "pre_delim.json";
  p = run_ablate("--log-level warn probe " + r.pre.string() + " --set 'probe.delimiters=[3, 4, 5]' --out " + delim_out.string());
  INFO(p.out);
  REQUIRE(p.status == 0);
  CHECK(p.out.find("first-delimiter Sink^") != std::string::npos);
  const json delim = json::parse(ablate::test::read_text(delim_out))["probe"]["sink"]["delimiter"];
  REQUIRE(delim.is_object());
  CHECK(delim["sequences"].get<int64_t>() > 0);
  CHECK(delim["sink_eps"].get<double>() >= 0);
  p = run_ablate("--log-level warn probe " + r.pre.string() + " --set 'probe.delimiters=[3, 999]'");
  CHECK(p.status == 2);
  CHECK(p.out.find("probe.delimiters") != std::string::npos);
}

TEST_CASE("compare writes a terminal table, JSON and a self-contained HTML report") {
  auto& r = runs();
  REQUIRE(r.ok);
  const fs::path html_path = r.root / "report" / "report.html", json_path = r.root / "compare.json";
  auto c = run_ablate("--log-level warn compare " + r.pre.string() + " " + r.sandwich.string() + " --out " +
               html_path.string() + " --json " + json_path.string());
  INFO(c.out);
  REQUIRE(c.status == 0);
  CHECK(c.out.find("spike_magnitude") != std::string::npos);
  CHECK(c.out.find("sandwich") != std::string::npos);

  const std::string html = ablate::test::read_text(html_path);
  for (const char* id : {"summary", "loss", "spike-profile", "sink-layers", "alpha-maps", "interventions", "emergence", "weights"})
    CHECK(html.find(std::string("<section id=\"") + id + "\"") != std::string::npos);
  // Self-contained: the only "http" is the SVG namespace name (never fetched).
  std::string stripped = html;
  for (size_t i; (i = stripped.find("http://www.w3.org/2000/svg")) != std::string::npos;) stripped.erase(i, 26);
  CHECK(stripped.find("http") == std::string::npos);
  CHECK(html_problem(html) == "");
  CHECK(html.find("No comparable weights") == std::string::npos);

  const json j = json::parse(ablate::test::read_text(json_path));
  REQUIRE(j["runs"].size() == 2);
  CHECK(j["runs"][0]["name"] == "pre");
  CHECK(j["runs"][1]["name"] == "sandwich");
  CHECK(j["runs"][0]["weight_diff"].empty());
  // Sandwich adds output norms; the shared parameters (embeddings, attention, FFN) are compared.
  CHECK(j["runs"][1]["weight_diff"].size() > 0);
  for (const auto& w : j["runs"][1]["weight_diff"]) {
    CHECK(w["relative_norm"].get<double>() >= 0);
    CHECK(w["cosine"].get<double>() <= 1.0 + 1e-12);
  }
  CHECK(j["runs"][1]["spike_magnitude"].is_number());
  CHECK(j["runs"][1]["sink_mass"].is_number());
  // The full probe's interventions reach the comparison: loss change with the sink masked.
  CHECK(j["runs"][1]["delta_mask_sink"].is_number());
  CHECK(j["runs"][1]["delta_mask_first_position"].is_null());  // softmax: the sink is position 0
  CHECK(c.out.find("delta_mask_sink") != std::string::npos);
  CHECK(c.out.find("delta_mask_both") != std::string::npos);
  // compare saved the sandwich run's probe beside its checkpoint (pre's came from the probe test
  // or was written now).
  CHECK(fs::exists(r.sandwich / "checkpoints" / "step_00000006" / "probe.json"));
}

TEST_CASE("probe and compare: bad inputs exit 2 with one line") {
  auto& r = runs();
  REQUIRE(r.ok);
  auto e = run_ablate("probe " + (r.root / "nonexistent").string());
  CHECK(e.status == 2);
  CHECK(count_lines(e.out) == 1);
  CHECK(e.out.find("no such run directory or checkpoint") != std::string::npos);

  fs::create_directories(r.root / "empty");
  e = run_ablate("probe " + (r.root / "empty").string());
  CHECK(e.status == 2);
  CHECK(count_lines(e.out) == 1);
  CHECK(e.out.find("no complete checkpoint") != std::string::npos);

  // A damaged checkpoint: one byte of the weights changed (the manifest's checksum catches it).
  const fs::path damaged = r.root / "damaged";
  fs::copy(r.pre / "checkpoints" / "step_00000006", damaged, fs::copy_options::recursive);
  {
    std::fstream f(damaged / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  e = run_ablate("probe " + damaged.string());
  CHECK(e.status == 2);
  CHECK(count_lines(e.out) == 1);
  CHECK(e.out.find("damaged checkpoint") != std::string::npos);

  e = run_ablate("compare " + r.pre.string() + " " + damaged.string());
  CHECK(e.status == 2);
  CHECK(count_lines(e.out) == 1);
  e = run_ablate("compare " + r.pre.string());
  CHECK(e.status == 2);
  CHECK(count_lines(e.out) == 1);
  e = run_ablate("probe " + r.pre.string() + " --set model.d_model=64");
  CHECK(e.status == 2);
  CHECK(count_lines(e.out) == 1);
}
