// Logging for every floor. The sink is spdlog (terminal lines, an optional run-directory file,
// rank-aware prefixes), but this header includes neither spdlog nor fmt: LibTorch ships its own
// fmt 12 headers, which shadow the fmt 9 that Debian's spdlog is built against, so spdlog is
// confined to log.cpp, compiled without torch's include path. Callers build the message with
// log::str(...) (operator<< of each argument).
#pragma once

#include <sstream>
#include <string>

namespace ablate::log {

enum class Level { trace, debug, info, warn, error, off };

// Parses "trace".."off"; returns false on an unknown name.
bool parse_level(const std::string& name, Level& out);
void set_level(Level level);
Level level();
// Prefix for every line, e.g. "rank 1" in data-parallel runs; empty = none.
void set_prefix(const std::string& prefix);
// Also write every line (plain, with date) to this file; empty path = stop.
void set_file(const std::string& path);

void write(Level level, const std::string& message);
inline void trace(const std::string& m) { write(Level::trace, m); }
inline void debug(const std::string& m) { write(Level::debug, m); }
inline void info(const std::string& m) { write(Level::info, m); }
inline void warn(const std::string& m) { write(Level::warn, m); }
inline void error(const std::string& m) { write(Level::error, m); }

template <class... Args>
std::string str(const Args&... args) {
  std::ostringstream ss;
  (ss << ... << args);
  return ss.str();
}

}  // namespace ablate::log
