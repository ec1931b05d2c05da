// Shards (round trip, llm.c headers, bad files), tokenizers and the synthetic language.
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <filesystem>
#include <map>

#include "data/core/errors.h"
#include "data/prepare.h"
#include "data/shards.h"
#include "data/synthetic.h"
#include "data/tokenizer.h"
#include "tests/data/tmpdir.h"

using namespace ablate;
using namespace ablate::data;

namespace {

// An llm.c shard written by hand, byte for byte as llm.c's Python writes it.
void write_raw_shard(const std::string& path, int32_t magic, int32_t version, int32_t count,
                     const std::vector<uint16_t>& tokens) {
  int32_t header[256] = {};
  header[0] = magic;
  header[1] = version;
  header[2] = count;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(header, sizeof header, 1, f);
  std::fwrite(tokens.data(), 2, tokens.size(), f);
  std::fclose(f);
}

template <class Fn>
std::string user_error(Fn fn) {
  try {
    fn();
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("shard writer and reader round trip, uint16 and uint32, with rotation", "[shards]") {
  test::TempDir dir;
  for (int64_t vocab : {int64_t{257}, int64_t{100000}}) {
    const std::string name = vocab > 65536 ? "big" : "small";
    std::vector<int32_t> tokens;
    for (int i = 0; i < 2500; ++i) tokens.push_back(static_cast<int32_t>((i * 7919) % vocab));
    ShardWriter w({dir.path.string(), name, vocab, /*shard_tokens=*/1000});
    w.write(tokens.data(), 1234);
    w.write(tokens.data() + 1234, 2500 - 1234);
    w.close();
    REQUIRE(w.paths().size() == 3);
    REQUIRE(w.tokens_written() == 2500);
    CHECK(w.paths()[0] == dir / (name + "_000000.bin"));
    std::vector<int32_t> back;
    for (const auto& p : w.paths()) {
      Shard s(p);
      CHECK(s.token_bytes() == (vocab > 65536 ? 4 : 2));
      CHECK(s.magic() == (vocab > 65536 ? kShardMagicU32 : kShardMagicU16));
      std::vector<int32_t> part(static_cast<size_t>(s.size()));
      s.read(0, s.size(), part.data());
      back.insert(back.end(), part.begin(), part.end());
    }
    CHECK(back == tokens);
  }
}

TEST_CASE("a hand-made llm.c shard loads unchanged", "[shards]") {
  test::TempDir dir;
  std::vector<uint16_t> toks = {50256, 15496, 11, 995, 0, 65535};
  write_raw_shard(dir / "fineweb_train_000001.bin", 20240520, 1, 6, toks);
  Shard s(dir / "fineweb_train_000001.bin");
  REQUIRE(s.size() == 6);
  for (size_t i = 0; i < toks.size(); ++i) CHECK(s[static_cast<int64_t>(i)] == toks[i]);
  // Directory specs pick *train* files in name order.
  write_raw_shard(dir / "fineweb_val_000000.bin", 20240520, 1, 6, toks);
  const auto files = expand_shard_spec(dir.path.string(), "data.train");
  REQUIRE(files.size() == 1);
  CHECK(files[0] == dir / "fineweb_train_000001.bin");
}

TEST_CASE("bad shards give UserErrors naming the file and the problem", "[shards]") {
  test::TempDir dir;
  std::vector<uint16_t> toks(10, 7);
  write_raw_shard(dir / "trunc.bin", 20240520, 1, 20, toks);
  auto msg = user_error([&] { Shard s(dir / "trunc.bin"); });
  CHECK(msg.find("trunc.bin") != std::string::npos);
  CHECK(msg.find("truncated") != std::string::npos);

  write_raw_shard(dir / "magic.bin", 12345, 1, 10, toks);
  msg = user_error([&] { Shard s(dir / "magic.bin"); });
  CHECK(msg.find("magic.bin") != std::string::npos);
  CHECK(msg.find("wrong magic 12345") != std::string::npos);

  write_raw_shard(dir / "version.bin", 20240520, 3, 10, toks);
  msg = user_error([&] { Shard s(dir / "version.bin"); });
  CHECK(msg.find("version 3") != std::string::npos);

  { std::ofstream(dir / "tiny.bin") << "hello"; }
  msg = user_error([&] { Shard s(dir / "tiny.bin"); });
  CHECK(msg.find("shorter than the 1024-byte header") != std::string::npos);

  msg = user_error([&] { Shard s(dir / "absent.bin"); });
  CHECK(msg.find("absent.bin") != std::string::npos);

  msg = user_error([&] { expand_shard_spec(dir / "nothing_*.bin", "data.train"); });
  CHECK(msg.find("matches no shard") != std::string::npos);
}

TEST_CASE("byte tokenizer round trips bytes and has BOS 256", "[tokenizer]") {
  auto tok = load_tokenizer("byte");
  CHECK(tok->vocab_size() == 257);
  CHECK(tok->bos_id() == 256);
  const std::string s = "héllo\nworld\x01";
  auto ids = tok->encode(s);
  CHECK(ids.size() == s.size());
  ids.insert(ids.begin(), 256);
  CHECK(tok->decode(ids) == s);
  CHECK_THROWS_AS(load_tokenizer("/nonexistent/tok.model"), UserError);
}

TEST_CASE("SentencePiece training, loading, encoding", "[tokenizer]") {
  test::TempDir dir;
  {
    std::ofstream f(dir / "corpus.txt");
    const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home"};
    for (int i = 0; i < 3000; ++i) {
      for (int j = 0; j < 8; ++j) f << words[(i * 7 + j * 3 + i / 5) % 12] << (j < 7 ? " " : "");
      f << "\n";
    }
  }
  train_sentencepiece({dir / "corpus.txt"}, 300, "bpe", dir / "tok");
  auto tok = load_tokenizer(dir / "tok.model");
  CHECK(tok->bos_id() == 1);
  CHECK(tok->vocab_size() <= 300);
  const auto ids = tok->encode("the cat sat on a mat");
  CHECK(!ids.empty());
  CHECK(tok->decode(ids) == "the cat sat on a mat");
  // No punctuation in the corpus: the delimiters are byte-fallback pieces, each decoding to one.
  const auto delims = tok->delimiter_ids();
  CHECK(delims.size() == delimiter_texts().size());
  for (int32_t id : delims) {
    const std::string text = tok->decode({id});
    INFO(id << " decodes to '" << text << "'");
    CHECK(std::find(delimiter_texts().begin(), delimiter_texts().end(), text) != delimiter_texts().end());
  }
}

TEST_CASE("synthetic language: BOS first, ~5% markers, correct repeats, pure function", "[synthetic]") {
  SyntheticOptions o;
  o.vocab = 100000;  // large and uniform, so that an accidental match is improbable
  o.zipf_exponent = 0.0;
  SyntheticLanguage lang(o, /*seed=*/3);
  CHECK(lang.bos_id() == 100000);
  CHECK(lang.marker_id() == 100001);
  int64_t markers = 0, positions = 0, repeats_ok = 0;
  for (int64_t i = 0; i < 400; ++i) {
    const auto s = lang.sequence(kTrainStream, i, 256);
    REQUIRE(s[0] == lang.bos_id());
    for (size_t p = 1; p < s.size(); ++p) {
      ++positions;
      REQUIRE(s[p] != lang.bos_id());
      if (s[p] != lang.marker_id() || p + 1 >= s.size()) continue;
      ++markers;
      bool found = false;
      for (int64_t d = o.repeat_min; d <= o.repeat_max; ++d)
        if (static_cast<int64_t>(p) + 1 - d >= 1 && s[p + 1 - static_cast<size_t>(d)] == s[p + 1]) found = true;
      repeats_ok += found;
      REQUIRE(s[p + 1] < o.vocab);
    }
  }
  const double frac = static_cast<double>(markers) / static_cast<double>(positions);
  CHECK(frac > 0.04);
  CHECK(frac < 0.06);
  CHECK(repeats_ok == markers);
  // Pure function of (seed, stream, index); prefixes agree; streams and seeds differ.
  CHECK(lang.sequence(kTrainStream, 5, 64) == lang.sequence(kTrainStream, 5, 64));
  const auto long_seq = lang.sequence(kTrainStream, 5, 100);
  CHECK(std::vector<int32_t>(long_seq.begin(), long_seq.begin() + 64) == lang.sequence(kTrainStream, 5, 64));
  CHECK(lang.sequence(kValStream, 5, 64) != lang.sequence(kTrainStream, 5, 64));
  CHECK(SyntheticLanguage(o, 4).sequence(kTrainStream, 5, 64) != lang.sequence(kTrainStream, 5, 64));
}

TEST_CASE("synthetic language follows a Zipf law", "[synthetic]") {
  SyntheticOptions o;  // 128 ids, s = 1
  SyntheticLanguage lang(o, 0);
  std::map<int32_t, int64_t> counts;
  for (int64_t i = 0; i < 300; ++i)
    for (int32_t t : lang.sequence(kTrainStream, i, 200)) counts[t]++;
  // p(0)/p(1) = 2 and p(0)/p(3) = 4 under s = 1.
  CHECK(static_cast<double>(counts[0]) / counts[1] == Approx(2.0).epsilon(0.1));
  CHECK(static_cast<double>(counts[0]) / counts[3] == Approx(4.0).epsilon(0.15));
  CHECK_THROWS_AS(SyntheticLanguage(SyntheticOptions{1}, 0), UserError);
}

TEST_CASE("prepare: documents become BOS + tokens, split into train and val shards", "[prepare]") {
  test::TempDir dir;
  {
    std::ofstream f(dir / "a.txt");
    for (int d = 0; d < 30; ++d) f << "doc " << d << " line one\nline two\n\n\n";
    std::ofstream(dir / "b.txt") << "last document without a final newline";
    std::ofstream(dir / "empty.txt") << "\n\n  \n";
  }
  PrepareOptions o;
  o.inputs = {dir / "a.txt", dir / "b.txt", dir / "empty.txt"};
  o.out = dir / "shards";
  o.val_fraction = 0.1;
  o.shard_tokens = 200;
  const auto r = prepare_corpus(o);
  CHECK(r.documents == 31);
  REQUIRE(r.val_files.size() >= 1);
  CHECK(r.train_files.size() > 1);
  CHECK(r.train_files[0] == (dir.path / "shards" / "train_000000.bin").string());
  CHECK(std::filesystem::exists(dir / "shards/prepare.json"));
  // Reassemble the train split and decode it: documents 0, 9, 19, 29 went to validation.
  std::vector<int32_t> all;
  for (const auto& p : r.train_files) {
    Shard s(p);
    std::vector<int32_t> part(static_cast<size_t>(s.size()));
    s.read(0, s.size(), part.data());
    all.insert(all.end(), part.begin(), part.end());
  }
  CHECK(static_cast<int64_t>(all.size()) == r.train_tokens);
  REQUIRE(all[0] == 256);
  std::vector<std::string> docs;
  for (int32_t t : all) {
    if (t == 256) docs.emplace_back();
    else docs.back().push_back(static_cast<char>(t));
  }
  REQUIRE(docs.size() == 27);
  CHECK(docs[0] == "doc 1 line one\nline two");
  CHECK(docs.back() == "last document without a final newline");
  Shard v(r.val_files[0]);
  CHECK(v[0] == 256);
  CHECK(v[1] == 'd');

  PrepareOptions empty = o;
  empty.inputs = {dir / "empty.txt"};
  empty.out = dir / "none";
  try {
    prepare_corpus(empty);
    FAIL("no error for an empty corpus");
  } catch (const UserError& e) {
    CHECK(std::string(e.what()).find("empty corpus") != std::string::npos);
  }
  o.inputs = {dir / "missing.txt"};
  CHECK_THROWS_AS(prepare_corpus(o), UserError);
}
