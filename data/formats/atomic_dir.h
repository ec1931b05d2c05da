// Atomic directories and files (docs/formats.md, "Atomic directories").
// Invariant: a directory committed by AtomicDir is either absent or complete — every file
// fsynced and listed with its size and SHA-256 in manifest.json — never half-written.
// Protocol: files are written under "<dir>.tmp-<pid>"; commit() fsyncs each file, writes and
// fsyncs manifest.json, fsyncs the directory, renames it to <dir> (an existing <dir> is moved
// aside first and removed after), and fsyncs the parent.
#pragma once

#include <cstdint>
#include <string>

namespace ablate::data {

constexpr const char* kManifestName = "manifest.json";

class AtomicDir {
 public:
  explicit AtomicDir(std::string final_dir);  // creates the temporary directory
  ~AtomicDir();                               // removes it unless committed
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;

  const std::string& tmp_dir() const { return tmp_; }
  const std::string& final_dir() const { return final_; }
  // Where to write file `name` (may contain '/': subdirectories are created).
  std::string path(const std::string& name) const;
  void commit();

 private:
  std::string final_;
  std::string tmp_;
  bool committed_ = false;
};

// "" when every file in the manifest is present with its size and checksum; otherwise the
// first problem, e.g. "model.safetensors: truncated (100 of 4096 bytes)". Never throws for a
// damaged directory (callers skip it with a warning).
std::string verify_manifest(const std::string& dir);

// tmp file beside `path`, fsync, rename over `path`, fsync the parent.
void atomic_write_file(const std::string& path, const std::string& bytes);
// Creates `dir` and its parents; UserError naming `dir` where a file is in the way.
void make_dirs(const std::string& dir);
// make_dirs for the folder a file `path` goes into (nothing for a bare file name).
void make_parent_dirs(const std::string& path);
// Before long work whose result goes to `path`: its folder exists (made) and it is not a folder.
void prepare_output_file(const std::string& path);

// Lower-case hex SHA-256 of a file / of bytes.
std::string sha256_file(const std::string& path);
std::string sha256_hex(const std::string& bytes);
void fsync_path(const std::string& path);  // file or directory

// Removes a file or a directory tree; a missing path is fine. Use this, not
// std::filesystem::remove_all: libtorch.so exports its own copy of std::filesystem symbols, and
// remove_all resolves to it and crashes (null call) in binaries linked against LibTorch 2.11.
void remove_tree(const std::string& path);

}  // namespace ablate::data
