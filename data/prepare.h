// Text corpus -> token shards (`ablate data prepare`; docs/data.md, "Preparing a corpus").
// Documents are blocks of non-blank lines separated by one or more blank lines (the layout of
// ../shared/corpora); a file's end also ends a document. Each document is written as BOS
// followed by the tokens of its lines joined with "\n". Document k (counting from 0 over all
// inputs) goes to validation when k == 0 or ⌊(k+1)·f⌋ > ⌊k·f⌋ for f = val_fraction (every
// ~1/f-th document, deterministic), or, with val_tokens > 0, while the validation split holds
// fewer than val_tokens tokens. Memory stays bounded: text is read line by line and a
// document longer than 1 MiB is encoded in pieces at line boundaries.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ablate::data {

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string tokenizer = "byte";
  std::string out;
  double val_fraction = 0.01;
  int64_t val_tokens = 0;  // > 0: the first documents, up to this many tokens, are validation
  int64_t shard_tokens = 100'000'000;
};

struct PrepareResult {
  int64_t documents = 0;
  int64_t train_tokens = 0;
  int64_t val_tokens = 0;
  std::vector<std::string> train_files;  // <out>/train_000000.bin, ...
  std::vector<std::string> val_files;    // <out>/val_000000.bin, ...
};

// Also writes <out>/prepare.json (tokenizer, counts, files). UserError on a missing input or an
// empty corpus.
PrepareResult prepare_corpus(const PrepareOptions& options);

}  // namespace ablate::data
