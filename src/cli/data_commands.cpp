// `ablate data tokenizer|prepare|inspect`: tokenizer training, corpus -> shards, shard summary.
#include <algorithm>
#include <iostream>
#include <memory>

#include "data/core/errors.h"
#include "data/core/log.h"
#include "data/prepare.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "src/cli/commands.h"

namespace ablate::cli {

void add_data_commands(CLI::App& app, Action& action) {
  auto* data = app.add_subcommand("data", "tokenizers and token shards (docs/data.md)");
  data->require_subcommand(1);

  struct TokArgs {
    std::vector<std::string> inputs;
    int64_t vocab_size = 4096;
    std::string out;
    std::string model_type = "bpe";
  };
  auto ta = std::make_shared<TokArgs>();
  auto* tok = data->add_subcommand("tokenizer", "train a SentencePiece tokenizer on text files");
  tok->add_option("--input", ta->inputs, "text files (one sentence or paragraph a line)")->required()->take_all();
  tok->add_option("--vocab-size", ta->vocab_size, "vocabulary size")->required();
  tok->add_option("--out", ta->out, "output model path (tok.model; tok.vocab is written beside it)")->required();
  tok->add_option("--model-type", ta->model_type, "bpe | unigram")
      ->check(CLI::IsMember({"bpe", "unigram"}))
      ->capture_default_str();
  tok->callback([ta, &action] {
    action = [ta] {
      data::train_sentencepiece(ta->inputs, ta->vocab_size, ta->model_type, ta->out);
      std::string model = ta->out;
      if (model.size() < 6 || model.substr(model.size() - 6) != ".model") model += ".model";
      const auto t = data::load_tokenizer(model);
      std::cout << "wrote " << model << " (" << ta->model_type << ", vocab " << t->vocab_size() << ", bos "
                << t->bos_id() << ")\n";
      return 0;
    };
  });

  auto pa = std::make_shared<data::PrepareOptions>();
  auto* prep = data->add_subcommand("prepare", "tokenize text files into llm.c token shards plus a validation split");
  prep->add_option("--input", pa->inputs, "text files; documents are separated by blank lines")->required()->take_all();
  prep->add_option("--tokenizer", pa->tokenizer, "byte | path to a SentencePiece .model")->capture_default_str();
  prep->add_option("--out", pa->out, "output directory (train_000000.bin..., val_000000.bin, prepare.json)")
      ->required();
  auto* frac = prep->add_option("--val-fraction", pa->val_fraction, "fraction of documents held out for validation")
                   ->capture_default_str();
  prep->add_option("--val-tokens", pa->val_tokens, "hold out the first documents, up to N tokens, instead")
      ->excludes(frac);
  prep->add_option("--shard-tokens", pa->shard_tokens, "tokens per shard file")->capture_default_str();
  prep->callback([pa, &action] {
    action = [pa] {
      const auto r = data::prepare_corpus(*pa);
      std::cout << "wrote " << r.train_files.size() << " train shard(s) (" << r.train_tokens << " tokens) and "
                << r.val_files.size() << " val shard(s) (" << r.val_tokens << " tokens) from " << r.documents
                << " documents to " << pa->out << "\n";
      return 0;
    };
  });

  struct InspectArgs {
    std::string shard;
    std::string tokenizer;
    int64_t head = 32;
  };
  auto ia = std::make_shared<InspectArgs>();
  auto* insp = data->add_subcommand("inspect", "check a token shard and summarise it");
  insp->add_option("SHARD", ia->shard, "shard file")->required();
  insp->add_option("--tokenizer", ia->tokenizer, "also decode the first tokens (byte | .model)");
  insp->add_option("--head", ia->head, "how many leading tokens to show")
      ->check(CLI::Range(0, 1000000000))
      ->capture_default_str();
  insp->callback([ia, &action] {
    action = [ia] {
      const data::Shard s(ia->shard);
      int64_t max_id = -1, min_id = INT64_MAX;
      for (int64_t i = 0; i < s.size(); ++i) {
        max_id = std::max(max_id, s[i]);
        min_id = std::min(min_id, s[i]);
      }
      data::check_max_id(s, max_id);
      std::cout << s.path() << "\n  format:  llm.c shard, magic " << s.magic() << ", version " << s.version() << ", uint"
                << 8 * s.token_bytes() << " tokens\n  tokens:  " << s.size() << "\n";
      if (s.size() > 0) std::cout << "  ids:     " << min_id << ".." << max_id << "\n";
      const int64_t n = std::min(ia->head, s.size());
      std::vector<int32_t> head(static_cast<size_t>(n));
      s.read(0, n, head.data());
      std::cout << "  first:  ";
      for (auto t : head) std::cout << " " << t;
      std::cout << "\n";
      if (!ia->tokenizer.empty()) {
        const auto tok = data::load_tokenizer(ia->tokenizer);
        int64_t bos = 0;
        for (int64_t i = 0; i < s.size(); ++i) bos += s[i] == tok->bos_id();
        std::cout << "  documents (BOS " << tok->bos_id() << "): " << bos << "\n";
        std::vector<int32_t> valid;
        for (auto t : head)
          if (t < tok->vocab_size()) valid.push_back(t);
        std::cout << "  text:    " << tok->decode(valid) << "\n";
      }
      return 0;
    };
  });
}

}  // namespace ablate::cli
