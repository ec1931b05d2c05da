// Options for data: tokenizers, shards and the loader. Plain structs; field names are the YAML
// keys under `data.` (src/config binds them).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ablate::data {

// The synthetic language of experiments/decoupling (docs/data.md): BOS, then tokens drawn
// i.i.d. from a Zipf law over `vocab` ids, except that a fraction `repeat_prob` of positions
// repeat the token `repeat_min..repeat_max` back, announced by a marker token.
struct SyntheticOptions {
  int64_t vocab = 128;        // content ids; BOS and the marker come after them
  double zipf_exponent = 1.0;
  double repeat_prob = 0.05;
  int64_t repeat_min = 2;
  int64_t repeat_max = 15;
  int64_t val_sequences = 256;  // fixed validation set size
};

struct DataOptions {
  std::string source = "synthetic";  // synthetic | shards
  std::string train = "";            // shards: a file, directory or glob of train shards
  std::string val = "";              // shards: validation shards (default: <train dir>/val_*.bin)
  std::string tokenizer = "byte";    // byte | path to a SentencePiece .model
  int64_t seq_len = 64;              // tokens per training sequence (inputs)
  std::vector<int64_t> loss_window;  // [min, max] target positions 1..seq_len; empty = all
  bool bos = true;                   // every sequence starts with BOS (else random crops)
  int64_t seed = 0;                  // data order seed: independent of the model seed
  SyntheticOptions synthetic;
};

}  // namespace ablate::data
