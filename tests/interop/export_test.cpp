// `ablate export hf` and `ablate export tensorboard` end to end, checked by the Python libraries
// themselves (docs/interop.md): tiny CPU runs are trained through the binary and exported;
// transformers loads each export (tests/interop/check_hf.py) and its logits on the same tokens
// must equal Ablate's own forward pass within 1e-4 (fp32); AutoTokenizer must encode like Ablate's
// SentencePiece tokenizer; TensorBoard's EventAccumulator must read back the metrics.jsonl values
// (tests/interop/check_tensorboard.py). Unsupported variants and bad inputs exit 2 with one line.
// The Python is the project's venv (ABLATE_PYTHON overrides), which scripts/setup.sh provisions.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "data/formats/safetensors.h"
#include "data/tokenizer.h"
#include "modules/model.h"
#include "src/config/config.h"
#include "tests/common.h"
#include "trainers/checkpoint.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

ablate::test::CommandResult run_ablate(const std::string& args) { return ablate::test::run_ablate("--log-level warn " + args); }

std::string python() {
  if (const char* p = std::getenv("ABLATE_PYTHON"); p && *p) return p;
  return std::string(ABLATE_SOURCE_DIR) + "/.venv/bin/python";
}

std::string script(const std::string& name) { return std::string(ABLATE_SOURCE_DIR) + "/tests/interop/" + name; }

size_t count_lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

// The last line of a script's output that parses as a JSON object.
json last_json(const std::string& out) {
  std::istringstream in(out);
  std::string line;
  json found;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] != '{') continue;
    try {
      found = json::parse(line);
    } catch (const json::exception&) {
    }
  }
  return found;
}

// Trained weights, not the near-zero logits of init std 0.02: init.std 0.3 and a high learning
// rate make logits of order 1-10, so a 1e-4 agreement is a real test of the mapping.
const char* kConfig = R"(seed: 5
device: cpu
model: {d_model: 32, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8, vocab: 34, init: {std: 0.3}}
data: {source: synthetic, seq_len: 16, synthetic: {vocab: 32, val_sequences: 8}}
train:
  steps: 4
  batch: 4
  optimizer: {lr: 0.02}
  schedule: {warmup: 0}
  eval: {every: 2, batches: 1}
  checkpoint: {every: 0}
  probe: {every: 2}
  log: {every: 1}
probe: {sequences: 4, batch: 4, train_sequences: 4, seq_len: 16}
)";

struct Runs {
  ablate::test::ScratchDir scratch{"interop"};
  fs::path root = scratch.path;
  std::map<std::string, fs::path> dirs;  // name -> run dir
  std::map<std::string, std::string> failures;
  Runs() {
    std::ofstream(root / "tiny.yaml") << kConfig;
    // A small corpus and a SentencePiece tokenizer for the tokenizer export.
    {
      std::ofstream c(root / "corpus.txt");
      const char* words[] = {"the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "spikes",
                             "and", "sinks", "in", "attention", "layers", "Residual", "streams,", "norms."};
      uint32_t x = 12345;
      for (int doc = 0; doc < 200; ++doc) {
        for (int w = 0; w < 20; ++w) {
          x = x * 1103515245u + 12345u;
          c << (w ? " " : "") << words[(x >> 16) % 18];
        }
        c << "\n\n";
      }
    }
    const std::vector<std::pair<std::string, std::string>> runs = {
        {"llama", ""},  // GQA (4 query heads, 2 kv heads), untied
        {"qwen3", "--set model.norm.qk_norm=true --set model.tie_embeddings=true --set model.n_kv_heads=0"},
        {"mistral", "--set model.d_model=30"},  // 30 % 4 != 0: LlamaConfig would refuse it
        {"sandwich", "--set model.norm.placement=sandwich"},
    };
    for (const auto& [name, sets] : runs) train(name, "train " + (root / "tiny.yaml").string() + " " + sets);
    auto tok = run_ablate("data tokenizer --input " + (root / "corpus.txt").string() + " --vocab-size 320 --out " +
                      (root / "tok.model").string());
    auto prep = run_ablate("data prepare --input " + (root / "corpus.txt").string() + " --tokenizer " +
                       (root / "tok.model").string() + " --out " + (root / "shards").string() + " --val-fraction 0.1");
    if (tok.status != 0 || prep.status != 0) failures["spm"] = tok.out + prep.out;
    train("spm", "train " + (root / "tiny.yaml").string() + " --set data.source=shards --set data.train=" +
                     (root / "shards").string() + " --set data.tokenizer=" + (root / "tok.model").string() +
                     " --set model.vocab=384");
  }
  void train(const std::string& name, const std::string& args) {
    dirs[name] = root / name;
    auto r = run_ablate(args + " --run-dir " + dirs[name].string());
    if (r.status != 0) failures[name] += r.out;
  }
};

Runs& runs() {
  static Runs r;
  return r;
}

// Ablate's logits for `tokens`, from the model rebuilt out of the run's latest checkpoint.
at::Tensor ablate_logits(const fs::path& run_dir, const at::Tensor& tokens) {
  const auto w = ablate::trainers::load_weights(run_dir.string());
  const auto loaded = ablate::config::load_text(w.config_yaml, w.dir + "/config.yaml");
  ablate::modules::LanguageModel model(loaded.experiment.model);
  std::map<std::string, at::Tensor> saved(w.model.begin(), w.model.end());
  at::NoGradGuard no_grad;
  for (auto& p : model->named_parameters(/*recurse=*/true)) {
    REQUIRE(saved.count(p.key()) == 1);
    p.value().copy_(saved.at(p.key()));
  }
  model->eval();
  return model->forward(tokens).logits.contiguous();
}

// Exports `name`, computes Ablate's logits on fixed tokens, runs check_hf.py; returns its report.
json export_and_check(const std::string& name, const std::string& tokenizer_cases = "") {
  auto& r = runs();
  const auto failed = r.failures.find(name);
  INFO((failed == r.failures.end() ? std::string() : failed->second));
  REQUIRE(failed == r.failures.end());
  const fs::path out = r.root / ("hf_" + name);
  auto e = run_ablate("export hf " + r.dirs[name].string() + " " + out.string());
  INFO(e.out);
  REQUIRE(e.status == 0);
  CHECK(fs::exists(out / "config.json"));
  CHECK(fs::exists(out / "model.safetensors"));
  CHECK(fs::exists(out / "generation_config.json"));

  const auto w = ablate::trainers::load_weights(r.dirs[name].string());
  const auto cfg = ablate::config::load_text(w.config_yaml, "config.yaml").experiment;
  at::manual_seed(7);
  at::Tensor tokens = at::randint(0, cfg.model.vocab, {2, cfg.data.seq_len}, at::kLong);
  const at::Tensor logits = ablate_logits(r.dirs[name], tokens);
  const fs::path ref = r.root / ("ref_" + name + ".safetensors");
  ablate::data::save_safetensors(ref.string(), {{"tokens", tokens}, {"logits", logits}});

  std::string cmd = python() + " " + script("check_hf.py") + " " + out.string() + " " + ref.string();
  if (!tokenizer_cases.empty()) cmd += " --tokenizer " + tokenizer_cases;
  auto c = ablate::test::run_shell(cmd);
  INFO(c.out);
  const json report = last_json(c.out);
  REQUIRE(report.is_object());
  std::cout << "interop: export hf " << name << ": " << report["architecture"].get<std::string>()
            << ", max |logit diff| sdpa " << report["diff"]["sdpa"] << " eager " << report["diff"]["eager"]
            << " (max |logit| " << report["max_abs_logit"] << "); export " << e.seconds << " s, transformers check "
            << c.seconds << " s\n";
  CHECK(c.status == 0);
  CHECK(report["max_abs_diff"].get<double>() <= 1e-4);
  CHECK(report["max_abs_logit"].get<double>() > 1.0);  // not a vacuous comparison of near-zero logits
  return report;
}

}  // namespace

TEST_CASE("export hf: pre-norm RMSNorm SwiGLU RoPE with GQA loads as Llama with equal logits") {
  const json report = export_and_check("llama");
  CHECK(report["architecture"] == "LlamaForCausalLM");
  const json config = json::parse(std::ifstream(runs().root / "hf_llama" / "config.json"));
  CHECK(config["num_key_value_heads"] == 2);
  CHECK(config["tie_word_embeddings"] == false);
  CHECK(config["bos_token_id"] == 32);  // synthetic BOS = synthetic.vocab
  CHECK_FALSE(fs::exists(runs().root / "hf_llama" / "tokenizer.model"));  // synthetic ids: no tokenizer files
}

TEST_CASE("export hf: QK-norm with tied embeddings loads as Qwen3 with equal logits") {
  const json report = export_and_check("qwen3");
  CHECK(report["architecture"] == "Qwen3ForCausalLM");
}

TEST_CASE("export hf: d_model not a multiple of n_heads loads as Mistral with equal logits") {
  const json report = export_and_check("mistral");
  CHECK(report["architecture"] == "MistralForCausalLM");
}

TEST_CASE("export hf: a SentencePiece run ships a tokenizer AutoTokenizer reads like Ablate") {
  auto& r = runs();
  const std::string model = (r.root / "tok.model").string();
  auto tok = ablate::data::load_tokenizer(model);
  json cases = json::array();
  for (const std::string text : {"the quick brown fox", "Spikes  and\tsinks, in attention.", " norms. over a lazy dog",
                                 "unseen wörds ①"}) {
    std::vector<int32_t> ids = {tok->bos_id()};  // data.bos: true, as every training sequence starts
    for (int32_t id : tok->encode(text)) ids.push_back(id);
    cases.push_back({{"text", text}, {"ids", ids}});
  }
  std::ofstream(r.root / "tokenizer_cases.json") << cases.dump();
  const json report = export_and_check("spm", (r.root / "tokenizer_cases.json").string());
  CHECK(fs::exists(r.root / "hf_spm" / "tokenizer.model"));
  CHECK(fs::exists(r.root / "hf_spm" / "tokenizer_config.json"));
  CHECK(report["tokenizer_mismatches"].empty());
}

TEST_CASE("export hf: refuses what transformers cannot express, and bad input, with one line and exit 2") {
  auto& r = runs();
  REQUIRE(r.failures.count("sandwich") == 0);
  const fs::path out = r.root / "hf_sandwich";
  auto e = run_ablate("export hf " + r.dirs["sandwich"].string() + " " + out.string());
  INFO(e.out);
  CHECK(e.status == 2);
  CHECK(count_lines(e.out) == 1);
  CHECK(e.out.find("model.norm.placement 'sandwich' has no transformers counterpart") != std::string::npos);
  CHECK(e.out.find("config.yaml") != std::string::npos);
  CHECK_FALSE(fs::exists(out));

  // A non-empty existing OUT_DIR is kept unless --force.
  const fs::path busy = r.root / "busy";
  fs::create_directories(busy);
  std::ofstream(busy / "keep.txt") << "mine";
  auto b = run_ablate("export hf " + r.dirs["llama"].string() + " " + busy.string());
  CHECK(b.status == 2);
  CHECK(count_lines(b.out) == 1);
  CHECK(b.out.find("--force") != std::string::npos);
  CHECK(fs::exists(busy / "keep.txt"));
  auto f = run_ablate("export hf " + r.dirs["llama"].string() + " " + busy.string() + " --force");
  INFO(f.out);
  CHECK(f.status == 0);
  CHECK_FALSE(fs::exists(busy / "keep.txt"));
  CHECK(fs::exists(busy / "config.json"));

  auto missing = run_ablate("export hf " + (r.root / "nope").string() + " " + (r.root / "x").string());
  CHECK(missing.status == 2);
  CHECK(count_lines(missing.out) == 1);
}

TEST_CASE("export tensorboard: EventAccumulator reads back the values of metrics.jsonl") {
  auto& r = runs();
  REQUIRE(r.failures.count("llama") == 0);
  const fs::path run = r.dirs["llama"];
  for (int round = 0; round < 2; ++round) {  // the second export replaces the first
    auto e = run_ablate("export tensorboard " + run.string());
    INFO(e.out);
    REQUIRE(e.status == 0);
    int event_files = 0;
    for (const auto& f : fs::directory_iterator(run / "tensorboard"))
      event_files += f.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
    CHECK(event_files == 1);
    if (round == 1) std::cout << "interop: export tensorboard " << e.seconds << " s\n";
  }
  auto c = ablate::test::run_shell(python() + " " + script("check_tensorboard.py") + " " + (run / "tensorboard").string() + " " +
                 (run / "metrics.jsonl").string());
  INFO(c.out);
  const json report = last_json(c.out);
  REQUIRE(report.is_object());
  std::cout << "interop: tensorboard read back " << report["values"] << " values in " << report["tags"]
            << " tags from " << report["records"] << " records\n";
  CHECK(c.status == 0);
  CHECK(report["problems"].empty());

  // --out elsewhere; a non-empty foreign directory needs --force; a missing run is one line.
  const fs::path foreign = r.root / "foreign";
  fs::create_directories(foreign);
  std::ofstream(foreign / "notes.txt") << "mine";
  auto b = run_ablate("export tensorboard " + run.string() + " --out " + foreign.string());
  CHECK(b.status == 2);
  CHECK(count_lines(b.out) == 1);
  CHECK(fs::exists(foreign / "notes.txt"));
  auto m = run_ablate("export tensorboard " + (r.root / "nope").string());
  CHECK(m.status == 2);
  CHECK(count_lines(m.out) == 1);
  CHECK(m.out.find("nope") != std::string::npos);
}
