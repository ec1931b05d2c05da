// Byte-level and SentencePiece tokenizers (tokenizer.h).
#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>
#include <unordered_map>

#include "data/core/errors.h"
#include "data/core/log.h"

namespace ablate::data {
namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    s.reserve(ids.size());
    for (int32_t id : ids) {
      if (id == 256) continue;
      if (id < 0 || id > 256) throw std::invalid_argument(log::str("byte tokenizer: id ", id, " outside 0..256"));
      s.push_back(static_cast<char>(id));
    }
    return s;
  }
  int64_t vocab_size() const override { return 257; }
  int32_t bos_id() const override { return 256; }
  std::string name() const override { return "byte"; }
  std::vector<int32_t> delimiter_ids() const override {
    std::vector<int32_t> ids;
    for (const auto& t : delimiter_texts()) ids.push_back(static_cast<unsigned char>(t[0]));
    std::sort(ids.begin(), ids.end());
    return ids;
  }
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) : path_(path) {
    if (!std::filesystem::exists(path))
      throw UserError(log::str(path, ": tokenizer not found (data.tokenizer is 'byte' or a SentencePiece .model)"));
    const auto status = sp_.Load(path);
    if (!status.ok()) throw UserError(log::str(path, ": not a SentencePiece model: ", status.ToString()));
    if (sp_.bos_id() < 0)
      throw UserError(log::str(path, ": SentencePiece model has no BOS piece (train it with bos_id >= 0)"));
  }
  std::vector<int32_t> encode(const std::string& text) const override {
    const auto ids = sp_.EncodeAsIds(text);
    return {ids.begin(), ids.end()};
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> kept;
    kept.reserve(ids.size());
    for (int32_t id : ids) {
      if (id < 0 || id >= sp_.GetPieceSize())
        throw std::invalid_argument(log::str(path_, ": id ", id, " outside the vocabulary"));
      if (id != sp_.bos_id()) kept.push_back(id);
    }
    return sp_.DecodeIds(kept);
  }
  int64_t vocab_size() const override { return sp_.GetPieceSize(); }
  int32_t bos_id() const override { return sp_.bos_id(); }
  std::string name() const override { return path_; }
  // The piece itself, its word-initial form ("\u2581."), and its byte-fallback piece ("<0x2E>").
  std::vector<int32_t> delimiter_ids() const override {
    std::set<int32_t> ids;
    for (const auto& t : delimiter_texts()) {
      char byte_piece[8];
      std::snprintf(byte_piece, sizeof byte_piece, "<0x%02X>", static_cast<unsigned char>(t[0]));
      std::vector<std::string> pieces = {t, "\xE2\x96\x81" + t, byte_piece};
      for (const auto& piece : pieces) {
        const int id = sp_.PieceToId(piece);
        if (id >= 0 && id != sp_.unk_id() && !sp_.IsControl(id)) ids.insert(id);
      }
    }
    return {ids.begin(), ids.end()};
  }

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec) {
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  if (spec.empty()) throw UserError("data.tokenizer: empty (use 'byte' or a SentencePiece .model path)");
  return std::make_unique<SentencePieceTokenizer>(spec);
}

void train_sentencepiece(const std::vector<std::string>& files, int64_t vocab_size, const std::string& model_type,
                         const std::string& out_path) {
  if (files.empty()) throw UserError("tokenizer training: no input files");
  for (const auto& f : files)
    if (!std::filesystem::is_regular_file(f)) throw UserError(log::str(f, ": input file not found"));
  if (model_type != "bpe" && model_type != "unigram")
    throw UserError(log::str("--model-type: '", model_type, "' is not one of bpe, unigram"));
  if (vocab_size < 8) throw UserError(log::str("--vocab-size: ", vocab_size, " is too small"));
  std::string prefix = out_path;
  if (prefix.size() > 6 && prefix.substr(prefix.size() - 6) == ".model") prefix.resize(prefix.size() - 6);
  const auto parent = std::filesystem::path(prefix).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  std::string input;
  for (const auto& f : files) input += (input.empty() ? "" : ",") + f;
  const std::unordered_map<std::string, std::string> args = {
      {"input", input},
      {"model_prefix", prefix},
      {"vocab_size", std::to_string(vocab_size)},
      {"model_type", model_type},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"byte_fallback", "true"},
      {"character_coverage", "0.9995"},
      {"input_sentence_size", "2000000"},
      {"shuffle_input_sentence", "true"},
      {"hard_vocab_limit", "false"},
      {"max_sentence_length", "65536"},  // corpora keep a paragraph a line
      {"minloglevel", "1"},
  };
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) throw UserError(log::str("SentencePiece training failed: ", status.ToString()));
}

}  // namespace ablate::data
