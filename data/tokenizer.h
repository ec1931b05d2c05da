// Tokenizers: byte-level (no files) and SentencePiece (BPE or unigram, any existing .model).
// Invariants: ids are 0..vocab_size()-1; bos_id() is inside that range; decode(encode(s)) == s
// for the byte tokenizer (SentencePiece normalises whitespace, so only approximately there).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ablate::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  // BOS ids are dropped; ids outside the vocabulary are an error.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  // "byte" or the .model path: what load_tokenizer() takes to rebuild it.
  virtual std::string name() const = 0;
  // Ids of the single-token delimiters (docs/metrics.md, delimiter sink): the tokens for
  // . , ; : ! ? and newline that exist in the vocabulary, ascending.
  virtual std::vector<int32_t> delimiter_ids() const = 0;
};

// The delimiter characters of `Tokenizer::delimiter_ids`.
inline const std::vector<std::string>& delimiter_texts() {
  static const std::vector<std::string> texts = {".", ",", ";", ":", "!", "?", "\n"};
  return texts;
}

// spec: "byte" (bytes 0..255, BOS = 256, vocab 257) or a SentencePiece .model path (BOS = the
// model's bos id; a model without one is a UserError).
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec);

// Trains a SentencePiece model on text files (one sentence or paragraph per line) and writes
// `out_path` (a ".model" suffix is added when missing; the .vocab file lands beside it).
// model_type: "bpe" | "unigram". Ids: unk 0, bos 1, eos 2; byte fallback on.
void train_sentencepiece(const std::vector<std::string>& files, int64_t vocab_size, const std::string& model_type,
                         const std::string& out_path);

}  // namespace ablate::data
