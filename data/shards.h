// Token shards in the llm.c / modded-nanogpt format (docs/formats.md):
//   256 little-endian int32 header: [0] magic, [1] version, [2] token count, rest zero;
//   then `count` tokens, uint16 (magic 20240520, version 1) or uint32 (magic 20240801,
//   version 7 as llm.c's llama-3 shards write; version 1 is also accepted).
// Shard files written by llm.c or modded-nanogpt load unchanged. A Shard is memory-mapped
// read-only and validated when opened: any inconsistency (short file, wrong magic or version,
// size that disagrees with the count) is a UserError naming the file.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace ablate::data {

constexpr int32_t kShardMagicU16 = 20240520;
constexpr int32_t kShardMagicU32 = 20240801;
constexpr int64_t kShardHeaderInts = 256;
constexpr int64_t kShardHeaderBytes = kShardHeaderInts * 4;

class Shard {
 public:
  explicit Shard(const std::string& path);
  ~Shard();
  Shard(Shard&& other) noexcept;
  Shard& operator=(Shard&& other) noexcept;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const std::string& path() const { return path_; }
  int64_t size() const { return count_; }           // tokens
  int token_bytes() const { return token_bytes_; }  // 2 or 4
  int32_t magic() const { return magic_; }
  int32_t version() const { return version_; }
  int64_t operator[](int64_t i) const {
    return token_bytes_ == 2 ? static_cast<int64_t>(reinterpret_cast<const uint16_t*>(tokens_)[i])
                             : static_cast<int64_t>(reinterpret_cast<const uint32_t*>(tokens_)[i]);
  }
  // Copies tokens [start, start + n) into out; the range must lie inside the shard.
  void read(int64_t start, int64_t n, int32_t* out) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const unsigned char* tokens_ = nullptr;
  int64_t count_ = 0;
  int token_bytes_ = 2;
  int32_t magic_ = 0;
  int32_t version_ = 0;
};

// Token ids are int32 past the shard (uint32 shards can hold more): UserError naming the shard
// when its largest id, found by a scan the caller does anyway, does not fit.
void check_max_id(const Shard& shard, int64_t max_id);

// Streams tokens into <dir>/<name>_000000.bin, <name>_000001.bin, ..., starting a new file
// every `shard_tokens` tokens. Memory is bounded by a fixed write buffer. Each file is written
// as "<file>.partial" and renamed when complete, so a crash never leaves a valid-looking shard.
struct ShardWriterOptions {
  std::string dir;
  std::string name = "train";
  int64_t vocab_size = 257;              // picks the token width: <= 65536 -> uint16, else uint32
  int64_t shard_tokens = 100'000'000;    // llm.c's shard size
};

class ShardWriter {
 public:
  explicit ShardWriter(ShardWriterOptions options);
  ~ShardWriter();  // closes (finishing the current file) if close() was not called
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  void write(const int32_t* tokens, int64_t n);
  void write(const std::vector<int32_t>& tokens) { write(tokens.data(), static_cast<int64_t>(tokens.size())); }
  void close();
  int64_t tokens_written() const { return total_; }
  const std::vector<std::string>& paths() const { return paths_; }  // finished files

 private:
  void open_next();
  void finish_current();
  void flush_buffer();

  ShardWriterOptions opt_;
  int token_bytes_ = 2;
  std::FILE* file_ = nullptr;
  std::string current_;
  int64_t in_current_ = 0;
  int64_t total_ = 0;
  std::vector<unsigned char> buffer_;
  std::vector<std::string> paths_;
  bool closed_ = false;
};

// Expands a shard spec: a file, a directory (its *train*.bin files, else every *.bin that is
// not *val*), or a glob. Sorted by name. Matches nothing -> UserError naming the spec.
std::vector<std::string> expand_shard_spec(const std::string& spec, const std::string& what);

}  // namespace ablate::data
