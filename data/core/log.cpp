// spdlog behind data/core/log.h. Compiled without LibTorch's include path (see log.h).
#include "data/core/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <mutex>

namespace ablate::log {
namespace {

struct State {
  std::mutex mu;
  std::shared_ptr<spdlog::logger> terminal;
  std::shared_ptr<spdlog::logger> file;
  std::string prefix;
  Level level = Level::info;
};

State& state() {
  static State s;
  return s;
}

spdlog::level::level_enum to_spd(Level l) {
  switch (l) {
    case Level::trace: return spdlog::level::trace;
    case Level::debug: return spdlog::level::debug;
    case Level::info: return spdlog::level::info;
    case Level::warn: return spdlog::level::warn;
    case Level::error: return spdlog::level::err;
    case Level::off: return spdlog::level::off;
  }
  return spdlog::level::info;
}

std::shared_ptr<spdlog::logger>& terminal() {
  auto& s = state();
  if (!s.terminal) {
    s.terminal = spdlog::stderr_color_st("ablate-terminal");
    s.terminal->set_pattern("%^[%H:%M:%S %L]%$ %v");
    s.terminal->set_level(to_spd(s.level));
  }
  return s.terminal;
}

}  // namespace

bool parse_level(const std::string& name, Level& out) {
  static const std::pair<const char*, Level> names[] = {{"trace", Level::trace}, {"debug", Level::debug},
                                                        {"info", Level::info},   {"warn", Level::warn},
                                                        {"error", Level::error}, {"off", Level::off}};
  for (const auto& [n, l] : names)
    if (name == n) return out = l, true;
  return false;
}

void set_level(Level l) {
  std::lock_guard<std::mutex> g(state().mu);
  state().level = l;
  terminal()->set_level(to_spd(l));
}

Level level() { return state().level; }

void set_prefix(const std::string& prefix) {
  std::lock_guard<std::mutex> g(state().mu);
  state().prefix = prefix.empty() ? "" : "[" + prefix + "] ";
}

void set_file(const std::string& path) {
  std::lock_guard<std::mutex> g(state().mu);
  auto& s = state();
  if (s.file) {
    s.file->flush();
    spdlog::drop(s.file->name());
    s.file.reset();
  }
  if (path.empty()) return;
  s.file = spdlog::basic_logger_st("ablate-file:" + path, path);
  s.file->set_pattern("%Y-%m-%d %H:%M:%S.%e %l %v");
  s.file->set_level(spdlog::level::debug);
  s.file->flush_on(spdlog::level::info);
}

void write(Level l, const std::string& message) {
  std::lock_guard<std::mutex> g(state().mu);
  auto& s = state();
  auto spd = to_spd(l);
  terminal()->log(spd, "{}{}", s.prefix, message);
  if (s.file) s.file->log(spd, "{}{}", s.prefix, message);
}

}  // namespace ablate::log
