// Strict configuration: every key parses, bad input is named precisely, layering and round trip.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "data/core/errors.h"
#include "src/config/config.h"

using namespace ablate;
namespace fs = std::filesystem;

namespace {

std::string error_of(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  try {
    config::load_text(yaml, "test.yaml", sets);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("ablate-config-test-" + std::to_string(::getpid()) + "-" +
                                        std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

}  // namespace

TEST_CASE("defaults load and every documented key accepts its default via --set") {
  auto base = config::load_text("", "empty.yaml");
  CHECK(base.experiment.model.d_model == 128);
  for (const auto& k : config::schema_docs()) {
    if (k.is_section) continue;
    std::string value = k.default_value == "\"\"" ? "" : k.default_value;
    INFO(k.path);
    auto loaded = config::load_text("", "empty.yaml", {k.path + "=" + value});
    CHECK(loaded.yaml == base.yaml);
  }
}

TEST_CASE("every key in the YAML of the defaults is documented and vice versa") {
  auto yaml = config::load_text("", "empty.yaml").yaml;
  for (const auto& k : config::schema_docs()) {
    auto leaf = k.path.substr(k.path.rfind('.') == std::string::npos ? 0 : k.path.rfind('.') + 1);
    INFO(k.path);
    CHECK(yaml.find(leaf + ":") != std::string::npos);
  }
}

TEST_CASE("unknown keys name the file, line, key and the nearest valid key") {
  auto msg = error_of("model:\n  d_modle: 64\n");
  CHECK(msg == "test.yaml:2: model.d_modle: unknown key (did you mean 'model.d_model'?)");
  msg = error_of("seq_len: 32\n");
  CHECK(msg == "test.yaml:1: seq_len: unknown key (did you mean 'data.seq_len'?)");
  msg = error_of("model:\n  norm:\n    palcement: post\n");
  CHECK(msg.find("test.yaml:3: model.norm.palcement: unknown key (did you mean 'model.norm.placement'?)") == 0);
  msg = error_of("", {"train.optimiser.lr=1"});
  CHECK(msg.find("--set train.optimiser.lr=1: train.optimiser: unknown key (did you mean 'train.optimizer'?)") == 0);
}

TEST_CASE("wrong types and values are errors naming the key") {
  CHECK(error_of("model:\n  d_model: wide\n") == "test.yaml:2: model.d_model: expected an integer, got 'wide'");
  CHECK(error_of("model:\n  d_model: 64.5\n") == "test.yaml:2: model.d_model: expected an integer, got '64.5'");
  CHECK(error_of("model:\n  d_model: 0\n").find("model.d_model: value 0 is out of range in [1, 1048576]") != std::string::npos);
  CHECK(error_of("train:\n  optimizer:\n    lr: fast\n") == "test.yaml:3: train.optimizer.lr: expected a number, got 'fast'");
  CHECK(error_of("model:\n  tie_embeddings: maybe\n").find("expected true or false") != std::string::npos);
  CHECK(error_of("model:\n  attention:\n    variant: sofmax\n") ==
        "test.yaml:3: model.attention.variant: unknown value 'sofmax' (did you mean 'softmax'?); known: softmax, "
        "sigmoid, softmax1, k_bias, kv_bias, sink_token");
  CHECK(error_of("model: 5\n") == "test.yaml:1: model: is a section, expected a mapping of keys");
  CHECK(error_of("model:\n  d_model: [1, 2]\n").find("expected an integer, got a list") != std::string::npos);
  CHECK(error_of("data:\n  loss_window: 5\n").find("data.loss_window: expected a list of integers") != std::string::npos);
  CHECK(error_of("model: {d_model: 64\n").find("test.yaml:") == 0);  // YAML syntax error with position
  CHECK(error_of("", {"model.d_model"}).find("expected key=value") != std::string::npos);
  CHECK(error_of("model:\n  d_model: 8\n", {"model.d_model.x=3"}).find("'model.d_model' is a value, not a section") != std::string::npos);
}

TEST_CASE("cross-field checks run at load time") {
  CHECK(error_of("train:\n  batch: 16\n  micro_batch: 5\n") ==
        "test.yaml:3: train.micro_batch: 5 does not divide train.batch 16");
  CHECK(error_of("data:\n  seq_len: 32\n  loss_window: [1, 64]\n") ==
        "test.yaml:3: data.loss_window: max 64 is outside data.seq_len 32");
  CHECK(error_of("data:\n  loss_window: [10, 5]\n").find("min 10 is above max 5") != std::string::npos);
  CHECK(error_of("model:\n  n_heads: 4\n  n_kv_heads: 3\n").find("model.n_kv_heads") != std::string::npos);
  CHECK(error_of("model:\n  head_dim: 15\n").find("RoPE needs an even head_dim") != std::string::npos);
  CHECK(error_of("model:\n  vocab: 100\n").find("model.vocab") != std::string::npos);
  CHECK(error_of("device: gpu\n").find("device: expected auto, cpu, cuda or cuda:N") != std::string::npos);
  CHECK(error_of("data:\n  source: shards\n").find("data.train") != std::string::npos);
  // A key never set in any file is reported against the file itself.
  CHECK(error_of("model:\n  head_dim: 15\n").find("test.yaml:2:") == 0);
}

TEST_CASE("automatic values are filled in the typed options, not in the YAML") {
  auto l = config::load_text("data:\n  seq_len: 32\ntrain:\n  batch: 8\n", "t.yaml");
  CHECK(l.experiment.model.max_seq_len == 32);
  CHECK(l.experiment.train.micro_batch == 8);
  CHECK(l.yaml.find("max_seq_len: 0") != std::string::npos);
}

TEST_CASE("base inheritance, file, then --set: explicit precedence") {
  TempDir dir;
  fs::create_directories(dir.path / "presets");
  dir.write("presets/grand.yaml", "model:\n  d_model: 32\n  n_layers: 3\nseed: 7\n");
  dir.write("presets/parent.yaml", "base: grand.yaml\nmodel:\n  d_model: 48\n");
  auto child = dir.write("child.yaml", "base: presets/parent.yaml\nmodel:\n  n_layers: 5\n");
  auto l = config::load_file(child);
  CHECK(l.experiment.model.d_model == 48);  // parent over grandparent
  CHECK(l.experiment.model.n_layers == 5);  // file over base
  CHECK(l.experiment.seed == 7);            // inherited
  l = config::load_file(child, {"model.n_layers=9", "seed=3"});
  CHECK(l.experiment.model.n_layers == 9);  // --set over file
  CHECK(l.experiment.seed == 3);

  // Errors in a base file name that file and line.
  dir.write("bad_base.yaml", "model:\n  n_layer: 3\n");
  auto bad = dir.write("bad_child.yaml", "base: bad_base.yaml\n");
  try {
    config::load_file(bad);
    FAIL("expected an error");
  } catch (const UserError& e) {
    CHECK(std::string(e.what()).find("bad_base.yaml:2: model.n_layer: unknown key (did you mean 'model.n_layers'?)") !=
          std::string::npos);
  }
  // A list of bases merges left to right.
  dir.write("a.yaml", "model:\n  d_model: 16\n");
  dir.write("b.yaml", "model:\n  d_model: 24\n  n_heads: 3\n");
  auto both = dir.write("both.yaml", "base: [a.yaml, b.yaml]\n");
  l = config::load_file(both);
  CHECK(l.experiment.model.d_model == 24);
  CHECK(l.experiment.model.n_heads == 3);
  // Cycles and missing bases are errors.
  auto cyc = dir.write("cycle.yaml", "base: cycle.yaml\n");
  CHECK_THROWS_WITH(config::load_file(cyc), Catch::Contains("inheritance cycle"));
  auto missing = dir.write("missing.yaml", "base: nowhere.yaml\n");
  CHECK_THROWS_WITH(config::load_file(missing), Catch::Contains("nowhere.yaml: no such config file"));
}

TEST_CASE("resolved YAML round-trips: show -> load -> show is identical") {
  auto first = config::load_text(
      "model:\n  norm: {placement: sandwich, eps: 1.0e-6}\n  attention: {variant: softmax1}\n"
      "data:\n  loss_window: [2, 64]\ntrain:\n  optimizer: {lr: 0.003, weight_decay: 0.1}\nname: \"x: y\"\n",
      "t.yaml");
  auto second = config::load_text(first.yaml, "resolved.yaml");
  CHECK(first.yaml == second.yaml);
  CHECK(second.experiment.model.norm.eps == 1e-6);
  CHECK(second.experiment.name == "x: y");
  CHECK(second.experiment.data.loss_window == std::vector<int64_t>{2, 64});
  // Every shipped config round-trips too.
  for (const auto& entry : fs::recursive_directory_iterator(fs::path(ABLATE_SOURCE_DIR) / "configs")) {
    if (entry.path().extension() != ".yaml") continue;
    INFO(entry.path().string());
    auto a = config::load_file(entry.path().string());
    auto b = config::load_text(a.yaml, "resolved.yaml");
    CHECK(a.yaml == b.yaml);
  }
}

TEST_CASE("diff_keys lists exactly the keys that differ") {
  auto a = config::load_text("", "a.yaml").experiment;
  auto b = a;
  b.model.d_model = 64;
  b.train.steps = 5;
  auto d = config::diff_keys(a, b);
  CHECK(d == std::vector<std::string>{"model.d_model", "train.steps"});
}

TEST_CASE("docs/config.md carries the current key table") {
  std::ifstream in(fs::path(ABLATE_SOURCE_DIR) / "docs" / "config.md");
  REQUIRE(in);
  std::stringstream ss;
  ss << in.rdbuf();
  INFO("regenerate with: ablate config keys --markdown (see docs/config.md)");
  CHECK(ss.str().find(config::schema_markdown()) != std::string::npos);
}
