// `ablate export hf CHECKPOINT|RUN_DIR OUT_DIR` and `ablate export tensorboard RUN_DIR [--out DIR]`
// (docs/interop.md).
//
// Invariants:
// * export hf writes only configurations that a stock `transformers` architecture computes
//   exactly (same logits up to float rounding): pre-norm RMSNorm, SwiGLU, softmax attention
//   without gate, RoPE (rotate-half on both sides, so q/k need no permutation), grouped queries,
//   tied or untied head → LlamaForCausalLM (MistralForCausalLM when d_model is not a multiple of
//   n_heads, which LlamaConfig rejects); the same with QK-norm → Qwen3ForCausalLM. Anything else
//   is refused before anything is written, naming the first config key without a counterpart.
// * Every tensor of the checkpoint is exported exactly once, as float32, under its Hugging Face
//   name; a tensor the mapping does not know is an error, never silently dropped.
// * OUT_DIR is written atomically (data/formats/atomic_dir.h): it is absent, the previous
//   content, or the complete export. A non-empty existing directory is replaced only with --force.
// * export tensorboard reads metrics.jsonl (the same reader as the trainer, so a damaged file is
//   one error line here) and hands the writing to torch.utils.tensorboard in the project's
//   virtual environment (scripts/interop/tensorboard_export.py); its output directory is also
//   swapped in atomically, so a re-export never mixes old and new event files.
#include <sentencepiece_processor.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <tuple>

#include "data/core/errors.h"
#include "data/core/log.h"
#include "data/formats/atomic_dir.h"
#include "data/formats/metrics_log.h"
#include "data/formats/safetensors.h"
#include "data/tokenizer.h"
#include "modules/model.h"
#include "src/cli/commands.h"
#include "src/config/config.h"
#include "trainers/checkpoint.h"

#ifndef ABLATE_SOURCE_DIR
#define ABLATE_SOURCE_DIR "."
#endif
#ifndef ABLATE_VENV_PYTHON
#define ABLATE_VENV_PYTHON ".venv/bin/python"
#endif

namespace fs = std::filesystem;

namespace ablate::cli {
namespace {

// Writes a file of the export, or a one-line error naming it (e.g. a full disk).
void write_checked(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.flush();
  if (!out) throw UserError(path + ": write failed (" + std::strerror(errno) + ")");
}

using nlohmann::json;

// OUT_DIR may be replaced when it does not exist, is empty, or `force` is set.
void check_output_dir(const std::string& out, bool force, const std::string& what) {
  std::error_code ec;
  if (!fs::exists(out, ec)) return;
  if (!fs::is_directory(out, ec)) throw UserError(out + ": exists and is not a directory");
  if (fs::directory_iterator(out, ec) == fs::directory_iterator() || force) return;
  throw UserError(out + ": exists and is not empty (" + what + "; --force replaces it)");
}

// ---- ablate export hf ------------------------------------------------------------------------

struct HfArgs {
  std::string path, out, tokenizer;
  bool force = false;
};

// The transformers architecture that computes this model exactly, or a UserError naming the
// first key that has no counterpart. `source` names the config file in the message.
struct HfArch {
  std::string architecture, model_type;
};

HfArch choose_architecture(const modules::ModelOptions& m, const std::string& source) {
  auto refuse = [&](const std::string& key, const std::string& value, const std::string& why) {
    throw UserError(source + ": cannot export: " + key + " '" + value + "' has no transformers counterpart" +
                    (why.empty() ? "" : " (" + why + ")"));
  };
  // One row per axis, in the order of docs/model.md; `want` is the only exportable value.
  const std::vector<std::tuple<std::string, std::string, std::string>> axes = {
      {"model.norm.type", m.norm.type, "rmsnorm"},
      {"model.norm.placement", m.norm.placement, "pre"},
      {"model.attention.variant", m.attention.variant, "softmax"},
      {"model.attention.gate.kind", m.attention.gate.kind, "none"},
      {"model.ffn.type", m.ffn.type, "swiglu"},
      {"model.position.type", m.position.type, "rope"},
  };
  for (const auto& [key, value, want] : axes)
    if (value != want) refuse(key, value, "export hf needs " + want);
  if (m.norm.qk_norm) return {"Qwen3ForCausalLM", "qwen3"};
  // LlamaConfig insists on hidden_size % num_attention_heads == 0 although its attention uses
  // head_dim; Mistral is the same network without that check (and no sliding window when null).
  if (m.d_model % m.n_heads != 0) return {"MistralForCausalLM", "mistral"};
  return {"LlamaForCausalLM", "llama"};
}

// Ablate name → Hugging Face name, for every parameter of an exportable model.
std::string hf_name(const std::string& name, const std::string& source) {
  static const std::vector<std::pair<std::string, std::string>> kLayer = {
      {"attn_norm.weight", "input_layernorm.weight"},
      {"attn.wq.weight", "self_attn.q_proj.weight"},
      {"attn.wk.weight", "self_attn.k_proj.weight"},
      {"attn.wv.weight", "self_attn.v_proj.weight"},
      {"attn.wo.weight", "self_attn.o_proj.weight"},
      {"attn.q_norm.weight", "self_attn.q_norm.weight"},
      {"attn.k_norm.weight", "self_attn.k_norm.weight"},
      {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"ffn.w_gate.weight", "mlp.gate_proj.weight"},
      {"ffn.w_up.weight", "mlp.up_proj.weight"},
      {"ffn.w_down.weight", "mlp.down_proj.weight"},
  };
  if (name == "embed.weight") return "model.embed_tokens.weight";
  if (name == "final_norm.weight") return "model.norm.weight";
  if (name == "lm_head.weight") return "lm_head.weight";
  if (name.rfind("layers.", 0) == 0) {
    const size_t dot = name.find('.', 7);
    if (dot != std::string::npos) {
      const std::string rest = name.substr(dot + 1);
      for (const auto& [ours, theirs] : kLayer)
        if (rest == ours) return "model." + name.substr(0, dot + 1) + theirs;
    }
  }
  throw UserError(source + ": cannot export: parameter '" + name + "' has no Hugging Face counterpart");
}

// The tokenizer of the run, when it has files to ship: SentencePiece only (byte and synthetic
// ids are documented in docs/interop.md).
struct TokenizerFiles {
  std::string model_path;  // empty: no tokenizer files
  int32_t bos = -1, eos = -1;
  std::string bos_piece, eos_piece, unk_piece;
};

TokenizerFiles tokenizer_files(const data::DataOptions& d, int64_t model_vocab, const std::string& override_path,
                               const std::string& source) {
  TokenizerFiles t;
  if (d.source == "synthetic") {
    if (!override_path.empty())
      throw UserError("--tokenizer " + override_path + ": the run trained on synthetic ids (data.source: synthetic in " +
                      source + "), which no tokenizer produces");
    t.bos = static_cast<int32_t>(d.synthetic.vocab);  // data/synthetic.h: BOS = vocab
    return t;
  }
  const std::string spec = override_path.empty() ? d.tokenizer : override_path;
  if (spec == "byte") {
    t.bos = data::load_tokenizer("byte")->bos_id();
    return t;
  }
  std::error_code ec;
  if (!fs::is_regular_file(spec, ec)) {
    throw UserError(override_path.empty()
                        ? source + ": data.tokenizer '" + spec +
                              "': file not found (run from the directory training ran in, or give --tokenizer PATH)"
                        : "--tokenizer " + spec + ": file not found");
  }
  sentencepiece::SentencePieceProcessor sp;
  if (!sp.Load(spec).ok()) throw UserError(spec + ": not a SentencePiece model");
  if (sp.GetPieceSize() > model_vocab)
    throw UserError(spec + ": " + std::to_string(sp.GetPieceSize()) + " pieces, more than the model's vocabulary (" +
                    std::to_string(model_vocab) + ", model.vocab in " + source + ")");
  t.model_path = spec;
  t.bos = sp.bos_id();
  t.eos = sp.eos_id();
  if (sp.bos_id() >= 0) t.bos_piece = sp.IdToPiece(sp.bos_id());
  if (sp.eos_id() >= 0) t.eos_piece = sp.IdToPiece(sp.eos_id());
  if (sp.unk_id() >= 0) t.unk_piece = sp.IdToPiece(sp.unk_id());
  return t;
}

json hf_config(const modules::ModelOptions& m, const HfArch& arch, const TokenizerFiles& tok) {
  json c = {
      {"architectures", {arch.architecture}},
      {"model_type", arch.model_type},
      {"vocab_size", m.vocab},
      {"hidden_size", m.d_model},
      {"intermediate_size", modules::effective_ffn_hidden(m)},
      {"num_hidden_layers", m.n_layers},
      {"num_attention_heads", m.n_heads},
      {"num_key_value_heads", modules::effective_kv_heads(m)},
      {"head_dim", m.head_dim},
      {"hidden_act", "silu"},
      {"max_position_embeddings", m.max_seq_len},
      {"rms_norm_eps", m.norm.eps},
      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", m.position.base}}},
      {"tie_word_embeddings", m.tie_embeddings},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"initializer_range", m.init.std},
      {"use_cache", true},
      {"dtype", "float32"},
      {"bos_token_id", tok.bos >= 0 ? json(tok.bos) : json()},
      {"eos_token_id", tok.eos >= 0 ? json(tok.eos) : json()},
      {"pad_token_id", json()},
  };
  if (arch.model_type == "llama") c["mlp_bias"] = false;
  if (arch.model_type == "mistral") c["sliding_window"] = json();
  if (arch.model_type == "qwen3") {
    c["use_sliding_window"] = false;
    c["sliding_window"] = json();
    c["max_window_layers"] = m.n_layers;
    c["layer_types"] = std::vector<std::string>(static_cast<size_t>(m.n_layers), "full_attention");
  }
  return c;
}

int run_export_hf(const HfArgs& a) {
  const auto weights = trainers::load_weights(a.path);  // UserError on a bad path or a damaged checkpoint
  const std::string source = (fs::path(weights.dir) / "config.yaml").string();
  const auto loaded = config::load_text(weights.config_yaml, source);
  const auto& m = loaded.experiment.model;
  const HfArch arch = choose_architecture(m, source);
  const TokenizerFiles tok = tokenizer_files(loaded.experiment.data, m.vocab, a.tokenizer, source);
  check_output_dir(a.out, a.force, "export hf writes a whole directory");

  // Tensors under their Hugging Face names, float32, in the checkpoint's order.
  data::NamedTensors tensors;
  std::set<std::string> seen;
  for (const auto& [name, t] : weights.model) {
    const std::string hf = hf_name(name, weights.dir + "/model.safetensors");
    if (!seen.insert(hf).second) throw UserError(weights.dir + "/model.safetensors: '" + name + "' given twice");
    tensors.emplace_back(hf, t.to(at::kCPU).to(at::kFloat).contiguous());
  }
  // The mapping covers the model exactly: as many tensors as the model has parameters.
  int64_t numel = 0;
  for (const auto& [name, t] : tensors) numel += t.numel();
  if (numel != modules::parameter_count(m))
    throw UserError(weights.dir + "/model.safetensors: holds " + std::to_string(numel) +
                    " parameters, its config.yaml describes " + std::to_string(modules::parameter_count(m)));

  data::AtomicDir dir(a.out);
  data::save_safetensors(dir.path("model.safetensors"), tensors,
                   {{"format", "pt"}, {"ablate_checkpoint", weights.dir}, {"ablate_step", std::to_string(weights.step)}});
  const json config = hf_config(m, arch, tok);
  write_checked(dir.path("config.json"), config.dump(2) + "\n");
  json generation = {{"_from_model_config", true}, {"bos_token_id", config["bos_token_id"]},
                     {"eos_token_id", config["eos_token_id"]}, {"pad_token_id", json()}};
  write_checked(dir.path("generation_config.json"), generation.dump(2) + "\n");
  write_checked(dir.path("ablate_config.yaml"), weights.config_yaml);  // provenance: what was trained
  if (!tok.model_path.empty()) {
    fs::copy_file(tok.model_path, dir.path("tokenizer.model"));
    // TokenizersBackend converts the .model with its own normaliser (LlamaTokenizer would assume
    // Llama's identity normaliser and split whitespace differently for models trained with nmt_nfkc).
    json tc = {{"tokenizer_class", "TokenizersBackend"},
               {"add_bos_token", loaded.experiment.data.bos},
               {"add_eos_token", false},
               {"model_max_length", m.max_seq_len},
               {"clean_up_tokenization_spaces", false}};
    tc["bos_token"] = tok.bos_piece.empty() ? json() : json(tok.bos_piece);
    tc["eos_token"] = tok.eos_piece.empty() ? json() : json(tok.eos_piece);
    tc["unk_token"] = tok.unk_piece.empty() ? json() : json(tok.unk_piece);
    write_checked(dir.path("tokenizer_config.json"), tc.dump(2) + "\n");
  }
  dir.commit();

  std::string tokenizer_note = tok.model_path.empty()
                                   ? (loaded.experiment.data.source == "synthetic"
                                          ? "no tokenizer files (synthetic ids; BOS " + std::to_string(tok.bos) + ")"
                                          : "no tokenizer files (byte ids: UTF-8 bytes 0..255, BOS 256)")
                                   : "tokenizer.model + tokenizer_config.json";
  std::cout << "wrote " << a.out << ": " << arch.architecture << " (" << tensors.size() << " tensors, step "
            << weights.step << "), " << tokenizer_note << "\n";
  return 0;
}

// ---- ablate export tensorboard ---------------------------------------------------------------

struct TensorboardArgs {
  std::string run_dir, out;
  bool force = false;
};

std::string python_executable() {
  if (const char* env = std::getenv("ABLATE_PYTHON"); env && *env) return env;
  return ABLATE_VENV_PYTHON;
}

// Runs argv[0] with argv (no shell); returns its exit status (128 + signal when killed).
int run_process(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& s : args) argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  std::cout.flush();
  std::cerr.flush();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error("waitpid failed");
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

// A directory that a previous `export tensorboard` wrote: event files and the manifest only.
bool is_previous_export(const std::string& dir) {
  std::error_code ec;
  bool any = false;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n != data::kManifestName && n.rfind("events.out.tfevents.", 0) != 0) return false;
    any = true;
  }
  return any;
}

int run_export_tensorboard(const TensorboardArgs& a) {
  const fs::path metrics = fs::path(a.run_dir) / "metrics.jsonl";
  std::error_code ec;
  if (!fs::is_directory(a.run_dir, ec)) throw UserError(a.run_dir + ": not a run directory");
  if (!fs::is_regular_file(metrics, ec)) throw UserError(metrics.string() + ": missing (not a run directory?)");
  const auto records = data::read_metrics(metrics.string());  // a malformed line: UserError naming file:line

  const std::string out = a.out.empty() ? (fs::path(a.run_dir) / "tensorboard").string() : a.out;
  if (!(fs::exists(out, ec) && is_previous_export(out)))
    check_output_dir(out, a.force, "not an earlier export tensorboard");

  const std::string python = python_executable();
  const std::string script = std::string(ABLATE_SOURCE_DIR) + "/scripts/interop/tensorboard_export.py";
  if (::access(python.c_str(), X_OK) != 0)
    throw UserError(python + ": no Python here (run scripts/setup.sh, or set ABLATE_PYTHON)");
  if (!fs::is_regular_file(script, ec)) throw UserError(script + ": missing (the source tree moved?)");

  data::AtomicDir dir(out);
  const fs::path run_name = fs::path(a.run_dir).lexically_normal();
  const std::string name = (run_name.has_filename() ? run_name : run_name.parent_path()).filename().string();
  const int rc = run_process({python, script, "--metrics", metrics.string(), "--out", dir.tmp_dir(), "--name", name});
  if (rc == 2) return 2;  // the script printed its one-line error
  if (rc != 0) throw std::runtime_error(script + " exited with status " + std::to_string(rc));
  dir.commit();
  std::cout << "wrote " << out << " (" << records.size() << " records of " << metrics.string()
            << "); view with: " << python << " -m tensorboard.main --logdir " << out << "\n";
  return 0;
}

}  // namespace

void add_export_commands(CLI::App& app, Action& action) {
  auto* exp = app.add_subcommand("export", "hand a run to the Python ecosystem: transformers, TensorBoard (docs/interop.md)");
  exp->require_subcommand(1);

  auto ha = std::make_shared<HfArgs>();
  auto* hf = exp->add_subcommand(
      "hf", "write a checkpoint as a Hugging Face transformers model (Llama, Mistral or Qwen3; others are refused)");
  hf->add_option("CHECKPOINT|RUN_DIR", ha->path, "checkpoint directory, or run directory (its latest checkpoint)")
      ->required();
  hf->add_option("OUT_DIR", ha->out, "output directory (config.json, model.safetensors, tokenizer files)")->required();
  hf->add_option("--tokenizer", ha->tokenizer, "SentencePiece .model to ship instead of the config's data.tokenizer");
  hf->add_flag("--force", ha->force, "replace OUT_DIR when it exists and is not empty");
  hf->callback([ha, &action] { action = [ha] { return run_export_hf(*ha); }; });

  auto ta = std::make_shared<TensorboardArgs>();
  auto* tb = exp->add_subcommand("tensorboard", "write metrics.jsonl as TensorBoard event files");
  tb->add_option("RUN_DIR", ta->run_dir, "run directory (reads its metrics.jsonl)")->required();
  tb->add_option("--out", ta->out, "event file directory (default: RUN_DIR/tensorboard)");
  tb->add_flag("--force", ta->force, "replace --out when it exists, is not empty and is not an earlier export");
  tb->callback([ta, &action] { action = [ta] { return run_export_tensorboard(*ta); }; });
}

}  // namespace ablate::cli
