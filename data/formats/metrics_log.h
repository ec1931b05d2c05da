// metrics.jsonl: one JSON object per line, appended and flushed record by record
// (docs/formats.md). Records carry "step"; truncate_after(step) rewrites the file (atomically)
// without the records past `step`, so that a resumed run appends exactly what an uninterrupted
// run would have written. A torn last line (a crash mid-write) is dropped with a warning.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace ablate::data {

class MetricsLog {
 public:
  explicit MetricsLog(std::string path);  // opens for appending; creates the file
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void write(const nlohmann::json& record);  // one line, flushed to the OS
  void sync();                               // fsync
  void truncate_after(int64_t step);         // drops records with "step" > step
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// Drops records with "step" > step (and a torn last line); a missing file is fine.
void truncate_metrics_after(const std::string& path, int64_t step);
// Every record in order; a torn (unparseable, unterminated) last line is skipped with a warning;
// an unparseable line elsewhere is a UserError naming file:line.
std::vector<nlohmann::json> read_metrics(const std::string& path);

}  // namespace ablate::data
