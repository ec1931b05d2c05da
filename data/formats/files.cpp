// Atomic directories, atomic files, SHA-256 manifests and the metrics log (atomic_dir.h,
// metrics_log.h): the small file formats behind run directories and checkpoints.
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/core/errors.h"
#include "data/core/log.h"
#include "data/formats/atomic_dir.h"
#include "data/formats/metrics_log.h"

namespace fs = std::filesystem;

namespace ablate::data {
namespace {

std::string hex(const unsigned char* p, unsigned n) {
  static const char* d = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (unsigned i = 0; i < n; ++i) {
    s[2 * i] = d[p[i] >> 4];
    s[2 * i + 1] = d[p[i] & 15];
  }
  return s;
}

struct Sha256 {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  Sha256() { EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx); }
  void update(const void* p, size_t n) { EVP_DigestUpdate(ctx, p, n); }
  std::string hexdigest() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_DigestFinal_ex(ctx, md, &n);
    return hex(md, n);
  }
};

}  // namespace

std::string sha256_hex(const std::string& bytes) {
  Sha256 h;
  h.update(bytes.data(), bytes.size());
  return h.hexdigest();
}

std::string sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError(log::str(path, ": cannot read"));
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(buf.data(), static_cast<size_t>(f.gcount()));
  }
  return h.hexdigest();
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(log::str(path, ": cannot open for fsync: ", std::strerror(errno)));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw std::runtime_error(log::str(path, ": fsync failed: ", std::strerror(errno)));
}

void remove_tree(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  ::nftw(
      path.c_str(), [](const char* p, const struct stat*, int, struct FTW*) {
        ::remove(p);  // best effort: keep walking
        return 0;
      }, 16,
      FTW_DEPTH | FTW_PHYS);
}

namespace {
std::string parent_of(const std::string& path) {
  auto p = fs::path(path).parent_path();
  return p.empty() ? "." : p.string();
}
void refuse_directory(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw UserError(log::str(path, ": is a directory, expected a file name"));
}
}  // namespace

void make_dirs(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir, ec))
    throw UserError(log::str(dir, ": cannot create the directory", ec ? ": " + ec.message() : std::string(": a file is in the way")));
}

void make_parent_dirs(const std::string& path) {
  const auto parent = fs::path(path).parent_path();
  if (!parent.empty()) make_dirs(parent.string());
}

void prepare_output_file(const std::string& path) {
  refuse_directory(path);
  make_parent_dirs(path);
}

void atomic_write_file(const std::string& path, const std::string& bytes) {
  refuse_directory(path);
  std::error_code ec;
  const std::string parent = parent_of(path);
  if (!fs::is_directory(parent, ec))
    throw UserError(log::str(path, ": cannot write: ", parent, fs::exists(parent, ec) ? " is not a directory" : " does not exist"));
  const std::string tmp = log::str(path, ".tmp-", ::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw UserError(log::str(path, ": cannot write: ", std::strerror(errno)));
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    f.flush();
    if (!f) {
      const std::string why = std::strerror(errno);
      fs::remove(tmp, ec);
      throw UserError(log::str(path, ": write failed: ", why));
    }
  }
  fsync_path(tmp);
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw UserError(log::str(path, ": cannot replace the file: ", ec.message()));
  }
  fsync_path(parent);
}

// --- AtomicDir -------------------------------------------------------------------------------

AtomicDir::AtomicDir(std::string final_dir) : final_(std::move(final_dir)) {
  while (!final_.empty() && final_.back() == '/') final_.pop_back();
  tmp_ = log::str(final_, ".tmp-", ::getpid());
  remove_tree(tmp_);  // a stale attempt by an earlier process with our pid
  std::error_code ec;
  fs::create_directories(tmp_, ec);
  if (ec) throw UserError(log::str(tmp_, ": cannot create directory: ", ec.message()));
}

AtomicDir::~AtomicDir() {
  if (committed_) return;
  remove_tree(tmp_);
}

std::string AtomicDir::path(const std::string& name) const {
  const fs::path p = fs::path(tmp_) / name;
  fs::create_directories(p.parent_path());
  return p.string();
}

void AtomicDir::commit() {
  if (committed_) throw std::logic_error("AtomicDir::commit twice");
  nlohmann::json files = nlohmann::json::object();
  std::vector<std::string> dirs{tmp_};
  for (const auto& e : fs::recursive_directory_iterator(tmp_)) {
    const std::string rel = fs::relative(e.path(), tmp_).generic_string();
    if (e.is_directory()) {
      dirs.push_back(e.path().string());
      continue;
    }
    if (rel == kManifestName) continue;
    fsync_path(e.path().string());
    files[rel] = {{"bytes", static_cast<int64_t>(e.file_size())}, {"sha256", sha256_file(e.path().string())}};
  }
  const nlohmann::json manifest = {{"format", "ablate-manifest"}, {"version", 1}, {"files", files}};
  {
    const std::string mpath = (fs::path(tmp_) / kManifestName).string();
    std::ofstream f(mpath, std::ios::binary | std::ios::trunc);
    f << manifest.dump(2) << "\n";
    f.flush();
    if (!f) throw UserError(log::str(mpath, ": write failed"));
  }
  fsync_path((fs::path(tmp_) / kManifestName).string());
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) fsync_path(*it);
  std::error_code ec;
  std::string aside;
  if (fs::exists(final_, ec)) {  // replace: move the old one aside, swap in, then delete it
    aside = log::str(final_, ".old-", ::getpid());
    remove_tree(aside);
    fs::rename(final_, aside);
  }
  fs::rename(tmp_, final_);
  committed_ = true;
  fsync_path(parent_of(final_));
  if (!aside.empty()) remove_tree(aside);
}

std::string verify_manifest(const std::string& dir) {
  const fs::path mpath = fs::path(dir) / kManifestName;
  std::ifstream f(mpath);
  if (!f) return log::str("missing ", kManifestName);
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    return log::str(kManifestName, ": not JSON (", e.what(), ")");
  }
  if (!m.is_object() || !m.contains("files") || !m["files"].is_object())
    return log::str(kManifestName, ": no \"files\" object");
  for (const auto& [name, info] : m["files"].items()) {
    const fs::path p = fs::path(dir) / name;
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) return log::str(name, ": missing");
    int64_t want = -1;
    std::string sha;
    try {
      want = info.at("bytes").get<int64_t>();
      sha = info.at("sha256").get<std::string>();
    } catch (const nlohmann::json::exception&) {
      return log::str(kManifestName, ": malformed entry for ", name);
    }
    const auto have = static_cast<int64_t>(fs::file_size(p, ec));
    if (have < want) return log::str(name, ": truncated (", have, " of ", want, " bytes)");
    if (have != want) return log::str(name, ": size ", have, " bytes, manifest says ", want);
    if (sha256_file(p.string()) != sha) return log::str(name, ": checksum mismatch (corrupt)");
  }
  return "";
}

// --- Metrics log -----------------------------------------------------------------------------

namespace {

// The lines of a metrics file: complete lines, plus a torn tail (no final newline) if any.
struct Lines {
  std::vector<std::string> complete;
  std::string torn;
};

Lines read_lines(const std::string& path) {
  Lines out;
  std::ifstream f(path, std::ios::binary);
  if (!f) return out;
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string all = ss.str();
  size_t begin = 0;
  while (begin < all.size()) {
    const size_t nl = all.find('\n', begin);
    if (nl == std::string::npos) {
      out.torn = all.substr(begin);
      break;
    }
    out.complete.push_back(all.substr(begin, nl - begin));
    begin = nl + 1;
  }
  return out;
}

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r") == std::string::npos; }

// The fields every reader relies on (docs/training.md): an object; "step" a non-negative integer
// and "split" a string where present.
void check_record(const nlohmann::json& r, const std::string& path, size_t line) {
  if (!r.is_object()) throw UserError(log::str(path, ":", line, ": not a JSON object"));
  if (r.contains("step") && !(r["step"].is_number_integer() && r["step"].get<int64_t>() >= 0))
    throw UserError(log::str(path, ":", line, ": step: expected a non-negative integer, got ", r["step"].dump()));
  if (r.contains("split") && !r["split"].is_string())
    throw UserError(log::str(path, ":", line, ": split: expected a string, got ", r["split"].dump()));
}

struct Record {
  std::string text;
  nlohmann::json value;
};

// The records of a metrics file, each checked (check_record). The last line may be torn by a
// crash mid-write (no newline, or not JSON with nothing after it): it is skipped with a warning
// and counted in *torn. Any other damaged line is a UserError naming its line.
std::vector<Record> parse_metrics(const std::string& path, size_t* torn = nullptr) {
  const Lines lines = read_lines(path);
  std::vector<Record> out;
  auto add = [&](const std::string& text, size_t number, bool may_be_torn) {
    if (blank(text)) return;
    nlohmann::json value;
    try {
      value = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception&) {
      if (!may_be_torn) throw UserError(log::str(path, ":", number, ": not a JSON object"));
      log::warn(log::str(path, ":", number, ": torn last record skipped"));
      if (torn) ++*torn;
      return;
    }
    check_record(value, path, number);
    out.push_back({text, std::move(value)});
  };
  for (size_t i = 0; i < lines.complete.size(); ++i)
    add(lines.complete[i], i + 1, i + 1 == lines.complete.size() && lines.torn.empty());
  add(lines.torn, lines.complete.size() + 1, true);  // complete JSON may just lack its newline
  return out;
}

}  // namespace

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  if (!fs::exists(path)) throw UserError(log::str(path, ": metrics log not found"));
  std::vector<nlohmann::json> out;
  for (auto& r : parse_metrics(path)) out.push_back(std::move(r.value));
  return out;
}

void truncate_metrics_after(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return;
  size_t dropped = 0;
  std::string kept;
  // A damaged record throws here, before anything is written: the file stays as it was.
  for (const auto& r : parse_metrics(path, &dropped)) {
    if (r.value.contains("step") && r.value["step"].get<int64_t>() > step) {
      ++dropped;
      continue;
    }
    kept += r.text + "\n";
  }
  if (dropped) log::info(log::str(path, ": dropped ", dropped, " record(s) past step ", step));
  atomic_write_file(path, kept);
}

MetricsLog::MetricsLog(std::string path) : path_(std::move(path)) {
  file_ = std::fopen(path_.c_str(), "ab");
  if (!file_) throw UserError(log::str(path_, ": cannot open metrics log: ", std::strerror(errno)));
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::write(const nlohmann::json& record) {
  const std::string line = record.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
    throw UserError(log::str(path_, ": write failed: ", std::strerror(errno)));
}

void MetricsLog::sync() {
  std::fflush(file_);
  ::fsync(::fileno(file_));
}

void MetricsLog::truncate_after(int64_t step) {
  std::fclose(file_);
  file_ = nullptr;
  truncate_metrics_after(path_, step);
  file_ = std::fopen(path_.c_str(), "ab");
  if (!file_) throw UserError(log::str(path_, ": cannot reopen metrics log: ", std::strerror(errno)));
}

}  // namespace ablate::data
