// Corpus preparation: stream text files through a tokenizer into train/val shards (prepare.h).
#include "data/prepare.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "data/core/errors.h"
#include "data/core/log.h"
#include "data/formats/atomic_dir.h"
#include "data/shards.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;

namespace ablate::data {

PrepareResult prepare_corpus(const PrepareOptions& o) {
  if (o.inputs.empty()) throw UserError("--input: no files given");
  if (o.out.empty()) throw UserError("--out: no output directory given");
  if (!(o.val_fraction >= 0 && o.val_fraction < 1))
    throw UserError(log::str("--val-fraction: ", o.val_fraction, " is not in [0, 1)"));
  for (const auto& f : o.inputs)
    if (!fs::is_regular_file(f)) throw UserError(log::str(f, ": input file not found"));
  const auto tok = load_tokenizer(o.tokenizer);
  ShardWriter train({o.out, "train", tok->vocab_size(), o.shard_tokens});
  ShardWriter val({o.out, "val", tok->vocab_size(), o.shard_tokens});

  PrepareResult r;
  uint64_t bytes_read = 0, total_bytes = 0, next_report = 64ull << 20;
  for (const auto& f : o.inputs) total_bytes += fs::file_size(f);
  const auto t0 = std::chrono::steady_clock::now();
  constexpr size_t kMaxPiece = 1 << 20;

  bool to_val = false;     // split of the current document
  bool in_doc = false;     // a document is open (its BOS is written)
  std::string text;        // pending lines of the current document
  auto writer = [&]() -> ShardWriter& { return to_val ? val : train; };
  auto flush_text = [&] {
    if (text.empty()) return;
    const auto ids = tok->encode(text);
    writer().write(ids);
    (to_val ? r.val_tokens : r.train_tokens) += static_cast<int64_t>(ids.size());
    text.clear();
  };
  auto begin_doc = [&] {
    const int64_t k = r.documents++;
    if (o.val_tokens > 0) {
      to_val = r.val_tokens < o.val_tokens;
    } else {
      const double f = o.val_fraction;
      to_val = f > 0 && (k == 0 || std::floor(static_cast<double>(k + 1) * f) > std::floor(static_cast<double>(k) * f));
    }
    writer().write(std::vector<int32_t>{tok->bos_id()});
    (to_val ? r.val_tokens : r.train_tokens) += 1;
    in_doc = true;
  };
  auto end_doc = [&] {
    flush_text();
    in_doc = false;
  };

  for (const auto& path : o.inputs) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw UserError(log::str(path, ": cannot read"));
    std::string line;
    while (std::getline(in, line)) {
      bytes_read += line.size() + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) {
        if (in_doc) end_doc();
      } else {
        if (!in_doc) begin_doc();
        if (!text.empty()) text += "\n";  // lines of a document (a flushed piece ends with "\n")
        text += line;
        if (text.size() >= kMaxPiece) {
          text += "\n";
          flush_text();
        }
      }
      if (bytes_read >= next_report) {
        next_report += 64ull << 20;
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        log::info(log::str("prepare: ", bytes_read >> 20, " of ", total_bytes >> 20, " MiB, ",
                           r.train_tokens + r.val_tokens, " tokens, ", static_cast<int64_t>(bytes_read / 1048576.0 / s),
                           " MiB/s"));
      }
    }
    if (in_doc) end_doc();  // a file's end ends its document
  }
  train.close();
  val.close();
  r.train_files = train.paths();
  r.val_files = val.paths();
  if (r.documents == 0)
    throw UserError(log::str("empty corpus: no text in ", o.inputs.size() == 1 ? o.inputs[0] : "the input files"));
  if (r.train_tokens == 0)
    throw UserError(log::str("empty corpus: all ", r.documents,
                             " document(s) went to validation; give more text or a smaller --val-fraction/--val-tokens"));
  if (r.val_tokens == 0) log::warn("validation split is empty: training will need data.val");
  const nlohmann::json summary = {{"tokenizer", tok->name()},        {"vocab_size", tok->vocab_size()},
                                  {"bos_id", tok->bos_id()},         {"inputs", o.inputs},
                                  {"documents", r.documents},        {"train_tokens", r.train_tokens},
                                  {"val_tokens", r.val_tokens},      {"train_files", r.train_files},
                                  {"val_files", r.val_files},        {"shard_tokens", o.shard_tokens}};
  atomic_write_file((fs::path(o.out) / "prepare.json").string(), summary.dump(2) + "\n");
  return r;
}

}  // namespace ablate::data
