// llm.c token shards: reading (mmap) and streaming writing. Format in shards.h / docs/formats.md.
#include "data/shards.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>

#include "data/core/errors.h"
#include "data/core/log.h"

namespace fs = std::filesystem;

namespace ablate::data {

Shard::Shard(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw UserError(log::str(path, ": cannot open shard: ", std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw UserError(log::str(path, ": cannot stat shard: ", std::strerror(errno)));
  }
  const auto file_bytes = static_cast<int64_t>(st.st_size);
  if (file_bytes < kShardHeaderBytes) {
    ::close(fd);
    throw UserError(log::str(path, ": truncated shard: ", file_bytes, " bytes, shorter than the ", kShardHeaderBytes,
                             "-byte header"));
  }
  map_bytes_ = static_cast<size_t>(file_bytes);
  map_ = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw UserError(log::str(path, ": cannot map shard: ", std::strerror(errno)));
  }
  int32_t header[3];
  std::memcpy(header, map_, sizeof header);
  magic_ = header[0];
  version_ = header[1];
  const int64_t count = header[2];
  auto fail = [&](const std::string& what) {
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    throw UserError(log::str(path, ": ", what));
  };
  if (magic_ == kShardMagicU16) {
    token_bytes_ = 2;
    if (version_ != 1) fail(log::str("unsupported shard version ", version_, " for magic ", magic_, " (expected 1)"));
  } else if (magic_ == kShardMagicU32) {
    token_bytes_ = 4;
    if (version_ != 1 && version_ != 7)
      fail(log::str("unsupported shard version ", version_, " for magic ", magic_, " (expected 7 or 1)"));
  } else {
    fail(log::str("wrong magic ", magic_, " in header[0] (expected ", kShardMagicU16, " for uint16 or ", kShardMagicU32,
                  " for uint32 tokens): not an llm.c token shard"));
  }
  if (count < 0) fail(log::str("negative token count ", count, " in header[2]"));
  const int64_t expected = kShardHeaderBytes + count * token_bytes_;
  if (file_bytes < expected)
    fail(log::str("truncated shard: header says ", count, " tokens (", expected, " bytes) but the file has ", file_bytes,
                  " bytes"));
  if (file_bytes > expected)
    fail(log::str("shard longer than its header says: ", count, " tokens (", expected, " bytes) but the file has ",
                  file_bytes, " bytes"));
  count_ = count;
  tokens_ = static_cast<const unsigned char*>(map_) + kShardHeaderBytes;
  ::madvise(map_, map_bytes_, MADV_RANDOM);
}

Shard::~Shard() {
  if (map_) ::munmap(map_, map_bytes_);
}

Shard::Shard(Shard&& o) noexcept { *this = std::move(o); }

Shard& Shard::operator=(Shard&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(map_, map_bytes_);
    path_ = std::move(o.path_);
    map_ = o.map_;
    map_bytes_ = o.map_bytes_;
    tokens_ = o.tokens_;
    count_ = o.count_;
    token_bytes_ = o.token_bytes_;
    magic_ = o.magic_;
    version_ = o.version_;
    o.map_ = nullptr;
    o.tokens_ = nullptr;
    o.count_ = 0;
  }
  return *this;
}

void Shard::read(int64_t start, int64_t n, int32_t* out) const {
  if (start < 0 || n < 0 || start + n > count_)
    throw std::out_of_range(log::str(path_, ": read [", start, ", ", start + n, ") outside ", count_, " tokens"));
  if (token_bytes_ == 2) {
    const auto* p = reinterpret_cast<const uint16_t*>(tokens_) + start;
    for (int64_t i = 0; i < n; ++i) out[i] = p[i];
  } else {
    const auto* p = reinterpret_cast<const uint32_t*>(tokens_) + start;
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(p[i]);  // ids checked at open (max_id)
  }
}

void check_max_id(const Shard& shard, int64_t max_id) {
  if (max_id > std::numeric_limits<int32_t>::max())
    throw UserError(log::str(shard.path(), ": token id ", max_id, " is above 2^31 - 1 (ids are int32)"));
}

// --- Writer ----------------------------------------------------------------------------------

namespace {
constexpr size_t kWriteBufferBytes = 4 << 20;

std::string shard_file_name(const std::string& name, size_t index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "_%06zu.bin", index);
  return name + buf;
}
}  // namespace

ShardWriter::ShardWriter(ShardWriterOptions options) : opt_(std::move(options)) {
  if (opt_.shard_tokens <= 0) throw UserError(log::str("shard size must be positive, got ", opt_.shard_tokens));
  if (opt_.shard_tokens > INT32_MAX)
    throw UserError(log::str("shard size ", opt_.shard_tokens, " exceeds the header's int32 count"));
  if (opt_.vocab_size > (int64_t{1} << 32)) throw UserError(log::str("vocab size ", opt_.vocab_size, " too large"));
  token_bytes_ = opt_.vocab_size <= 65536 ? 2 : 4;
  std::error_code ec;
  fs::create_directories(opt_.dir, ec);
  if (ec) throw UserError(log::str(opt_.dir, ": cannot create directory: ", ec.message()));
  buffer_.reserve(kWriteBufferBytes);
}

ShardWriter::~ShardWriter() {
  try {
    close();
  } catch (const std::exception& e) {
    log::error(log::str("shard writer: ", e.what()));
  }
}

void ShardWriter::open_next() {
  current_ = (fs::path(opt_.dir) / shard_file_name(opt_.name, paths_.size())).string();
  const std::string partial = current_ + ".partial";
  file_ = std::fopen(partial.c_str(), "wb");
  if (!file_) throw UserError(log::str(partial, ": cannot write: ", std::strerror(errno)));
  int32_t header[kShardHeaderInts] = {};
  if (std::fwrite(header, sizeof header, 1, file_) != 1)
    throw UserError(log::str(partial, ": write failed: ", std::strerror(errno)));
  in_current_ = 0;
}

void ShardWriter::flush_buffer() {
  if (buffer_.empty()) return;
  if (std::fwrite(buffer_.data(), 1, buffer_.size(), file_) != buffer_.size())
    throw UserError(log::str(current_, ".partial: write failed: ", std::strerror(errno)));
  buffer_.clear();
}

void ShardWriter::finish_current() {
  if (!file_) return;
  flush_buffer();
  int32_t header[3] = {token_bytes_ == 2 ? kShardMagicU16 : kShardMagicU32, token_bytes_ == 2 ? 1 : 7,
                       static_cast<int32_t>(in_current_)};
  const std::string partial = current_ + ".partial";
  bool ok = std::fseek(file_, 0, SEEK_SET) == 0 && std::fwrite(header, sizeof header, 1, file_) == 1 &&
            std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  if (!ok) throw UserError(log::str(partial, ": write failed: ", std::strerror(errno)));
  fs::rename(partial, current_);
  paths_.push_back(current_);
}

void ShardWriter::write(const int32_t* tokens, int64_t n) {
  if (closed_) throw std::logic_error("ShardWriter::write after close");
  for (int64_t i = 0; i < n; ++i) {
    if (!file_) open_next();
    const int64_t t = tokens[i];
    if (t < 0 || t >= opt_.vocab_size)
      throw std::invalid_argument(log::str("token id ", t, " outside vocabulary of ", opt_.vocab_size));
    if (token_bytes_ == 2) {
      const auto v = static_cast<uint16_t>(t);
      const auto* b = reinterpret_cast<const unsigned char*>(&v);
      buffer_.insert(buffer_.end(), b, b + 2);
    } else {
      const auto v = static_cast<uint32_t>(t);
      const auto* b = reinterpret_cast<const unsigned char*>(&v);
      buffer_.insert(buffer_.end(), b, b + 4);
    }
    ++in_current_;
    ++total_;
    if (buffer_.size() >= kWriteBufferBytes) flush_buffer();
    if (in_current_ == opt_.shard_tokens) finish_current();
  }
}

void ShardWriter::close() {
  if (closed_) return;
  closed_ = true;
  finish_current();
}

// --- Shard specs -----------------------------------------------------------------------------

std::vector<std::string> expand_shard_spec(const std::string& spec, const std::string& what) {
  std::vector<std::string> out;
  if (spec.empty()) throw UserError(log::str(what, ": no shards given"));
  std::error_code ec;
  if (fs::is_directory(spec, ec)) {
    std::vector<std::string> train, other;
    for (const auto& e : fs::directory_iterator(spec)) {
      const auto name = e.path().filename().string();
      if (!e.is_regular_file() || e.path().extension() != ".bin") continue;
      if (name.find("train") != std::string::npos) train.push_back(e.path().string());
      else if (name.find("val") == std::string::npos) other.push_back(e.path().string());
    }
    out = train.empty() ? other : train;
  } else if (fs::is_regular_file(spec, ec)) {
    out.push_back(spec);
  } else {
    glob_t g{};
    if (::glob(spec.c_str(), 0, nullptr, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
  }
  std::sort(out.begin(), out.end());
  if (out.empty()) throw UserError(log::str(what, ": '", spec, "' matches no shard files"));
  return out;
}

}  // namespace ablate::data
