#include "src/sweep/sweep.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "analysis/report.h"
#include "data/core/errors.h"
#include "data/core/log.h"
#include "data/formats/atomic_dir.h"
#include "data/formats/metrics_log.h"
#include "src/config/config.h"
#include "trainers/checkpoint.h"
#include "trainers/trainer.h"

extern char** environ;

namespace fs = std::filesystem;
using nlohmann::json;

namespace ablate::sweep {
namespace {

std::string where(const std::string& file, const YAML::Node& n) {
  return file + ":" + std::to_string(n.Mark().line + 1);
}

std::string flow(const YAML::Node& n) {
  YAML::Emitter e;
  e << YAML::Flow << n;
  return e.c_str();
}

const std::set<std::string>& config_keys() {
  static const std::set<std::string> keys = [] {
    std::set<std::string> k;
    for (const auto& d : config::schema_docs()) k.insert(d.path);
    return k;
  }();
  return keys;
}

void check_config_key(const std::string& file, const YAML::Node& key_node, const std::string& section) {
  const std::string key = key_node.as<std::string>();
  if (config_keys().count(key)) return;
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& k : config_keys()) {
    size_t d = config::edit_distance(key, k);
    if (d < best_d) best_d = d, best = k;
  }
  throw UserError(where(file, key_node) + ": " + section + "." + key + ": unknown config key" +
                  (best_d <= 3 ? " (did you mean " + best + "?)" : ""));
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string short_key(const std::string& key, const std::vector<std::string>& all) {
  std::string last = key.substr(key.rfind('.') + 1);
  int same = 0;
  for (const auto& k : all) same += k.substr(k.rfind('.') + 1) == last;
  return same > 1 ? key : last;
}

std::string trim_dashes(std::string s) {
  while (!s.empty() && s.front() == '-') s.erase(s.begin());
  while (!s.empty() && s.back() == '-') s.pop_back();
  return s;
}

int64_t checkpoint_step(const std::string& run_dir) {
  std::error_code ec;
  if (!fs::exists(fs::path(run_dir) / "checkpoints", ec)) return -1;
  auto latest = trainers::find_latest_checkpoint(run_dir);
  if (!latest) return -1;
  std::string name = fs::path(*latest).filename().string();  // step_00000100
  try {
    return std::stoll(name.substr(name.find('_') + 1));
  } catch (const std::exception&) {
    return -1;
  }
}

bool lock_held_elsewhere(const std::string& run_dir) {
  std::string path = (fs::path(run_dir) / ".lock").string();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool held = ::flock(fd, LOCK_EX | LOCK_NB) != 0;
  ::close(fd);
  return held;
}

// "1.3k tokens/s, ~44 min left" for a running point, from its last training record (tokens so far,
// the step and the throughput of the last logging interval); empty without one.
std::string pace(const nlohmann::json& rec, int64_t target_step) {
  if (!rec.contains("tokens_per_s") || !rec["tokens_per_s"].is_number() || !rec.contains("tokens") ||
      !rec["tokens"].is_number() || !rec.contains("step") || !rec["step"].is_number_integer())
    return "";
  const double tps = rec["tokens_per_s"].get<double>();
  const int64_t step = rec["step"].get<int64_t>();
  if (!(tps > 0) || step <= 0) return "";
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(tps < 10 || tps >= 1e3 ? 1 : 0);
  if (tps < 1e3) out << tps;
  else if (tps < 1e6) out << tps / 1e3 << "k";
  else out << tps / 1e6 << "M";
  out << " tokens/s";
  const double left_s = double(std::max<int64_t>(0, target_step - step)) * (rec["tokens"].get<double>() / step) / tps;
  out.precision(0);
  if (left_s < 90) out << ", ~" << left_s << " s left";
  else if (left_s < 90 * 60) out << ", ~" << left_s / 60 << " min left";
  else out << ", ~" << std::setprecision(1) << left_s / 3600 << " h left";
  return out.str();
}

std::string last_line(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  return last;
}

}  // namespace

std::string sanitise(const std::string& text) {
  std::string out;
  // A leading minus sign would be trimmed like any other dash: keep it as "m" (-4 -> m4), so
  // that 4 and -4 stay different variants.
  if (text.size() > 1 && text[0] == '-' && (std::isdigit(static_cast<unsigned char>(text[1])) || text[1] == '.'))
    out = "m";
  for (char c : out.empty() ? text : text.substr(1)) {
    char l = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    bool ok = (l >= 'a' && l <= 'z') || (l >= '0' && l <= '9') || l == '.' || l == '=' || l == '-' || l == '_';
    if (!ok) l = '-';
    if (l == '-' && !out.empty() && out.back() == '-') continue;
    out += l;
  }
  return trim_dashes(out);
}

SweepFile parse_sweep(const std::string& path, const std::vector<std::string>& extra_sets) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw UserError(path + ": no such sweep file");
  YAML::Node root;
  try {
    root = YAML::Load(read_text(path));
  } catch (const YAML::Exception& e) {
    throw UserError(path + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  if (!root.IsMap()) throw UserError(path + ": a sweep file is a mapping (base, name, grid, zip, seeds)");
  config::check_plain_keys(root, path);
  SweepFile s;
  s.path = path;
  s.dir = fs::path(path).parent_path().string();
  if (s.dir.empty()) s.dir = ".";
  s.name = fs::path(path).stem().string();
  static const std::vector<std::string> known = {"base", "name", "description", "grid", "zip", "seeds", "set",
                                                 "init_from_seed"};
  std::set<std::string> varied;
  auto scalar = [&](const YAML::Node& k, const YAML::Node& v, const std::string& key) {
    if (!v.IsScalar()) throw UserError(where(path, k) + ": " + key + ": expected a single value");
    return v.as<std::string>();
  };
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      std::string best;
      size_t best_d = SIZE_MAX;
      for (const auto& k : known) {
        size_t d = config::edit_distance(key, k);
        if (d < best_d) best_d = d, best = k;
      }
      std::string all;
      for (const auto& k : known) all += (all.empty() ? "" : ", ") + k;
      throw UserError(where(path, kv.first) + ": " + key + ": unknown key" +
                      (best_d <= 3 ? " (did you mean " + best + "?)" : "") + "; known: " + all);
    }
    if (key == "base") {
      s.base = scalar(kv.first, v, key);
      fs::path b(s.base);
      if (b.is_relative()) b = fs::path(s.dir) / b;
      s.base = b.lexically_normal().string();
      if (!fs::is_regular_file(s.base, ec)) throw UserError(where(path, kv.first) + ": base: no such file " + s.base);
    } else if (key == "name") {
      s.name = scalar(kv.first, v, key);
      if (s.name.empty() || sanitise(s.name) != s.name)
        throw UserError(where(path, kv.first) + ": name: use lower-case letters, digits, '.', '-', '_' (got '" +
                        s.name + "')");
    } else if (key == "description") {
      scalar(kv.first, v, key);
    } else if (key == "init_from_seed") {
      try {
        s.init_from_seed = v.as<bool>();
      } catch (const YAML::Exception&) {
        throw UserError(where(path, kv.first) + ": init_from_seed: expected true or false");
      }
    } else if (key == "seeds") {
      if (!v.IsSequence() || v.size() == 0)
        throw UserError(where(path, kv.first) + ": seeds: expected a non-empty list of integers");
      for (const auto& e : v) {
        try {
          s.seeds.push_back(e.as<int64_t>());
        } catch (const YAML::Exception&) {
          throw UserError(where(path, e) + ": seeds: '" + flow(e) + "' is not an integer");
        }
        if (s.seeds.back() < 0) throw UserError(where(path, e) + ": seeds: must be >= 0");
      }
      if (std::set<int64_t>(s.seeds.begin(), s.seeds.end()).size() != s.seeds.size())
        throw UserError(where(path, kv.first) + ": seeds: repeated seed");
    } else {  // grid, zip, set: maps of config keys
      if (!v.IsMap()) throw UserError(where(path, kv.first) + ": " + key + ": expected a mapping of config keys");
      Axis zip;
      size_t zip_len = 0;
      std::string zip_first;
      for (const auto& e : v) {
        const std::string ck = e.first.as<std::string>();
        check_config_key(path, e.first, key);
        if (ck == "seed" || ck == "data.seed" || ck == "name")
          if (key != "set" || ck == "name")
            throw UserError(where(path, e.first) + ": " + key + "." + ck + ": set by the sweep itself" +
                            (ck == "name" ? "" : " (use seeds:)"));
        if (!varied.insert(ck).second)
          throw UserError(where(path, e.first) + ": " + key + "." + ck + ": key given twice in the sweep");
        if (key == "set") {
          s.fixed_sets.push_back(ck + "=" + flow(e.second));
          continue;
        }
        if (!e.second.IsSequence() || e.second.size() == 0)
          throw UserError(where(path, e.first) + ": " + key + "." + ck + ": expected a non-empty list of values");
        std::vector<std::string> values;
        for (const auto& x : e.second) values.push_back(flow(x));
        if (key == "grid") {
          Axis a;
          a.keys = {ck};
          for (auto& x : values) a.values.push_back({x});
          s.axes.push_back(std::move(a));
        } else {
          if (zip.keys.empty()) {
            zip_len = values.size();
            zip_first = ck;
            zip.values.resize(zip_len);
          } else if (values.size() != zip_len) {
            throw UserError(where(path, e.first) + ": zip." + ck + ": " + std::to_string(values.size()) +
                            " values, but zip." + zip_first + " has " + std::to_string(zip_len) +
                            " (zip keys vary together)");
          }
          zip.keys.push_back(ck);
          for (size_t i = 0; i < zip_len; ++i) zip.values[i].push_back(values[i]);
        }
      }
      if (!zip.keys.empty()) s.axes.push_back(std::move(zip));
    }
  }
  if (s.base.empty()) throw UserError(path + ": base: required (the config every point starts from)");
  for (const auto& e : extra_sets) s.fixed_sets.push_back(e);
  return s;
}

Plan make_plan(const SweepFile& sweep, const std::string& out_dir) {
  Plan plan;
  plan.sweep = sweep;
  plan.runs_dir = !out_dir.empty() ? out_dir : (fs::path(sweep.dir) / "runs" / sweep.name).string();
  std::vector<std::string> all_keys;
  for (const auto& a : sweep.axes)
    for (const auto& k : a.keys) all_keys.push_back(k);

  // Odometer over the axes (first axis slowest), seeds innermost.
  std::vector<size_t> sizes;
  for (const auto& a : sweep.axes) sizes.push_back(a.values.size());
  const size_t n_seeds = sweep.seeds.empty() ? 1 : sweep.seeds.size();
  size_t combos = 1;
  for (size_t s : sizes) combos *= s;
  std::set<std::string> ids;
  for (size_t c = 0; c < combos; ++c) {
    std::vector<size_t> at(sizes.size());
    size_t rest = c;
    for (size_t i = sizes.size(); i-- > 0;) at[i] = rest % sizes[i], rest /= sizes[i];
    for (size_t si = 0; si < n_seeds; ++si) {
      Point p;
      p.index = plan.points.size();
      p.sets = sweep.fixed_sets;
      if (sweep.init_from_seed) p.sets.insert(p.sets.begin(), "model.init.by_name=true");
      std::vector<std::string> parts;
      for (size_t i = 0; i < sweep.axes.size(); ++i) {
        const Axis& a = sweep.axes[i];
        for (size_t k = 0; k < a.keys.size(); ++k) {
          const std::string& v = a.values[at[i]][k];
          p.vars.push_back({a.keys[k], v});
          p.sets.push_back(a.keys[k] + "=" + v);
          parts.push_back(short_key(a.keys[k], all_keys) + "=" + sanitise(v));
        }
      }
      p.variant.clear();
      for (const auto& s : parts) p.variant += (p.variant.empty() ? "" : "_") + s;
      if (!sweep.seeds.empty()) {
        p.seed = sweep.seeds[si];
        p.vars.push_back({"seed", std::to_string(p.seed)});
        p.sets.push_back("seed=" + std::to_string(p.seed));
        p.sets.push_back("data.seed=" + std::to_string(p.seed));
        parts.push_back("seed=" + std::to_string(p.seed));
      }
      for (const auto& s : parts) p.label += (p.label.empty() ? "" : "_") + s;
      if (p.variant.empty()) p.variant = "base";
      try {
        auto loaded = config::load_file(sweep.base, p.sets);
        p.id = (p.label.empty() ? std::string("point") : p.label) + "_" + data::sha256_hex(loaded.yaml).substr(0, 8);
        p.sets.push_back("name=" + p.id);
        auto named = config::load_file(sweep.base, p.sets);
        p.yaml = named.yaml;
        p.seed = named.experiment.seed;
        const auto& t = named.experiment.train;
        int64_t total = trainers::total_steps(t, named.experiment.data);
        p.target_step = t.hard_stop > 0 ? std::min(t.hard_stop, total) : total;
      } catch (const UserError& e) {
        throw UserError(sweep.path + ": point " + std::to_string(p.index) + " (" +
                        (p.label.empty() ? "base" : p.label) + "): " + e.what());
      }
      if (!ids.insert(p.id).second)
        throw UserError(sweep.path + ": point " + std::to_string(p.index) + " (" + p.label +
                        "): resolves to the same config as an earlier point (repeated value?)");
      p.run_dir = (fs::path(plan.runs_dir) / p.id).string();
      plan.points.push_back(std::move(p));
    }
  }
  return plan;
}

// ---- State ---------------------------------------------------------------------------------

const char* state_name(State s) {
  switch (s) {
    case State::pending: return "pending";
    case State::running: return "running";
    case State::done: return "done";
    case State::failed: return "failed";
  }
  return "?";
}

bool point_finished(const Point& p) {
  std::error_code ec;
  if (fs::exists(fs::path(p.run_dir) / "done", ec)) return true;
  return p.target_step > 0 && checkpoint_step(p.run_dir) >= p.target_step;
}

PointStatus point_status(const Point& p) {
  PointStatus st;
  std::error_code ec;
  const fs::path dir(p.run_dir);
  if (!fs::exists(dir, ec)) return st;
  st.checkpoint = checkpoint_step(p.run_dir);
  st.step = std::max<int64_t>(0, st.checkpoint);
  std::vector<nlohmann::json> records;
  if (fs::exists(dir / "metrics.jsonl", ec)) {
    records = data::read_metrics((dir / "metrics.jsonl").string());
    // Progress is the later of the last record and the last checkpoint: a run stopped by a signal
    // checkpoints at a step that need not have been logged.
    if (!records.empty() && records.back().contains("step") && records.back()["step"].is_number_integer())
      st.step = std::max(st.step, records.back()["step"].get<int64_t>());
  }
  if (fs::exists(dir / "done", ec) || (p.target_step > 0 && st.checkpoint >= p.target_step)) {
    st.state = State::done;
  } else if (lock_held_elsewhere(p.run_dir)) {
    st.state = State::running;
    for (auto it = records.rbegin(); it != records.rend(); ++it)
      if (it->value("split", "") == "train") {
        st.detail = pace(*it, p.target_step);
        break;
      }
  } else if (fs::exists(dir / "failed", ec)) {
    st.state = State::failed;
    st.detail = last_line((dir / "failed").string());
  } else if (st.checkpoint > 0) {  // stopped unfinished (a signal, the end of a job), not failed
    st.detail = "interrupted; `sweep run` resumes it from its step-" + std::to_string(st.checkpoint) + " checkpoint";
  }
  return st;
}

// ---- Running -------------------------------------------------------------------------------

namespace {

struct Child {
  pid_t pid = -1;
  size_t point = 0;
  int lock_fd = -1;
  int slot = 0;
};

std::string self_exe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) throw std::runtime_error("cannot read /proc/self/exe");
  std::string path(buf, static_cast<size_t>(n));
  const std::string deleted = " (deleted)";
  if (path.size() > deleted.size() && path.compare(path.size() - deleted.size(), deleted.size(), deleted) == 0)
    path.resize(path.size() - deleted.size());
  return path;
}

// Takes the point's lock without blocking; -1 if another process holds it.
int try_lock(const std::string& run_dir) {
  fs::create_directories(run_dir);
  std::string path = (fs::path(run_dir) / ".lock").string();
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot open " + path);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// "sweep: [0] <id>: step 300/600, 10.2k tokens/s, ~30 s left", from the point's run directory.
std::string progress_line(const Point& p) {
  const auto st = point_status(p);
  std::string line = "sweep: [" + std::to_string(p.index) + "] " + p.id + ": step " + std::to_string(st.step) + "/" +
                     std::to_string(p.target_step);
  return st.detail.empty() ? line : line + ", " + st.detail;
}

// `binary`: the name the child is given (argv[0], the log header); `exec_path`: what is executed.
pid_t start_child(const std::string& binary, const std::string& exec_path, const Point& p, int lock_fd,
                  const std::vector<std::string>& env_set, int attempt) {
  const std::string config = (fs::path(p.run_dir) / "config.yaml").string();
  const std::string log = (fs::path(p.run_dir) / "stdout.log").string();
  // Everything the child needs is prepared before fork (no allocation after it).
  std::vector<std::string> args = {binary, "train", config, "--run-dir", p.run_dir};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    // Each point is a single process: a data-parallel environment the sweep itself runs in
    // (a job template exporting WORLD_SIZE=1, say) must not make every point join a group.
    static const char* dist_vars[] = {"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "LOCAL_WORLD_SIZE=", "MASTER_ADDR=",
                                      "MASTER_PORT="};
    bool dist = false;
    for (const char* d : dist_vars) dist = dist || kv.rfind(d, 0) == 0;
    if (dist) continue;
    bool replaced = false;
    for (const auto& s : env_set)
      if (kv.compare(0, s.find('=') + 1, s, 0, s.find('=') + 1) == 0) replaced = true;
    if (!replaced) env.push_back(kv);
  }
  for (const auto& s : env_set) env.push_back(s);
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string header = "== ablate sweep: attempt " + std::to_string(attempt + 1) + ":";
  for (const auto& a : args) header += " " + a;
  for (const auto& s : env_set) header += " [" + s + "]";
  header += "\n";
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    // If the sweep dies, the trainer gets SIGTERM: it finishes the step and checkpoints.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ssize_t w = ::write(fd, header.data(), header.size());
      (void)w;
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::close(fd);
    }
    // The child keeps the point's lock (until it exits, even if the sweep is gone).
    ::fcntl(lock_fd, F_SETFD, 0);
    ::execve(exec_path.c_str(), argv.data(), envp.data());
    ::_exit(127);
  }
  return pid;
}

}  // namespace

RunSummary run_plan(const Plan& plan, const RunOptions& o) {
  RunSummary summary;
  // Children run the very image this process runs: /proc/self/exe stays valid when the file is
  // rebuilt or deleted during a long sweep (its readlink path then ends in " (deleted)" and cannot
  // be executed: every later point failed with status 127), and one sweep stays one build.
  const std::string binary = o.binary.empty() ? self_exe() : o.binary;
  const std::string exec_path = o.binary.empty() ? std::string("/proc/self/exe") : o.binary;
  const int slots = std::max(1, o.slots);
  std::deque<size_t> queue;
  for (const auto& p : plan.points)
    if (o.only < 0 || static_cast<size_t>(o.only) == p.index) queue.push_back(p.index);
  if (o.only >= 0 && queue.empty())
    throw UserError(plan.sweep.path + ": --only " + std::to_string(o.only) + ": the sweep has " +
                    std::to_string(plan.points.size()) + " points (0.." + std::to_string(plan.points.size() - 1) + ")");
  int threads = 0;
  if (o.devices.empty()) {
    int total = static_cast<int>(std::thread::hardware_concurrency());
    if (const char* env = std::getenv("OMP_NUM_THREADS")) total = std::max(1, std::atoi(env));
    threads = std::max(1, total / slots);
  }
  std::map<size_t, int> attempts;
  std::set<size_t> waiting_logged;
  std::vector<Child> running;
  std::vector<bool> slot_busy(static_cast<size_t>(slots), false);
  auto last_progress = std::chrono::steady_clock::now();

  while (!queue.empty() || !running.empty()) {
    // Fill free slots from the queue; points locked by another process are kept for later.
    size_t scanned = 0, queued = queue.size();
    while (static_cast<int>(running.size()) < slots && scanned < queued) {
      size_t idx = queue.front();
      queue.pop_front();
      ++scanned;
      const Point& p = plan.points[idx];
      int fd = try_lock(p.run_dir);
      if (fd < 0) {
        if (waiting_logged.insert(idx).second)
          log::info(log::str("sweep: ", p.id, " is running in another process; waiting for it"));
        queue.push_back(idx);
        continue;
      }
      if (point_finished(p)) {
        const fs::path done = fs::path(p.run_dir) / "done";
        std::error_code ec;
        if (!fs::exists(done, ec))
          data::atomic_write_file(done.string(), json{{"id", p.id}, {"step", p.target_step}}.dump() + "\n");
        log::info(log::str("sweep: ", p.id, " finished; skipped"));
        ++summary.skipped;
        ::close(fd);
        continue;
      }
      std::error_code ec;
      fs::remove(fs::path(p.run_dir) / "failed", ec);
      data::atomic_write_file((fs::path(p.run_dir) / "config.yaml").string(), p.yaml);
      int slot = 0;
      while (slot_busy[static_cast<size_t>(slot)]) ++slot;
      std::vector<std::string> env;
      if (!o.devices.empty())
        env.push_back("CUDA_VISIBLE_DEVICES=" + o.devices[static_cast<size_t>(slot) % o.devices.size()]);
      else
        env.push_back("OMP_NUM_THREADS=" + std::to_string(threads));
      Child c;
      c.point = idx;
      c.lock_fd = fd;
      c.slot = slot;
      c.pid = start_child(binary, exec_path, p, fd, env, attempts[idx]);
      slot_busy[static_cast<size_t>(slot)] = true;
      log::info(log::str("sweep: [", idx, "] ", p.id, " started (pid ", c.pid, ", ",
                         checkpoint_step(p.run_dir) >= 0 ? "resuming" : "new", ", attempt ", attempts[idx] + 1, ")"));
      running.push_back(c);
    }
    if (running.empty()) {  // only points held elsewhere remain
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      continue;
    }
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, o.progress_every > 0 ? WNOHANG : 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error("waitpid failed");
    }
    if (pid == 0) {  // every child still training
      const auto now = std::chrono::steady_clock::now();
      if (std::chrono::duration<double>(now - last_progress).count() >= o.progress_every) {
        last_progress = now;
        for (const auto& c : running) log::info(progress_line(plan.points[c.point]));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    auto it = std::find_if(running.begin(), running.end(), [pid](const Child& c) { return c.pid == pid; });
    if (it == running.end()) continue;
    Child c = *it;
    running.erase(it);
    slot_busy[static_cast<size_t>(c.slot)] = false;
    const Point& p = plan.points[c.point];
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    const int64_t reached = checkpoint_step(p.run_dir);
    if (code == 0 && reached >= p.target_step) {
      data::atomic_write_file((fs::path(p.run_dir) / "done").string(),
                              json{{"id", p.id}, {"step", reached}}.dump() + "\n");
      log::info(log::str("sweep: [", c.point, "] ", p.id, " done"));
      ++summary.done;
    } else {
      std::string why = code == 0 ? "stopped at step " + std::to_string(reached) + " of " + std::to_string(p.target_step)
                                  : "exit status " + std::to_string(code);
      std::string last = last_line((fs::path(p.run_dir) / "stdout.log").string());
      int& n = attempts[c.point];
      ++n;
      if (n <= o.retries) {
        log::warn(log::str("sweep: [", c.point, "] ", p.id, " failed (", why, "); retry ", n, " of ", o.retries));
        queue.push_back(c.point);
      } else {
        std::string msg = why + "; " + last + " (see " + (fs::path(p.run_dir) / "stdout.log").string() + ")";
        data::atomic_write_file((fs::path(p.run_dir) / "failed").string(), msg + "\n");
        log::error(log::str("sweep: [", c.point, "] ", p.id, " failed: ", msg));
        ++summary.failed;
        summary.failures.push_back(p.id + ": " + msg);
      }
    }
    ::close(c.lock_fd);
  }
  return summary;
}

// ---- Tables --------------------------------------------------------------------------------

namespace {

std::string columns(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w;
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], r[i].size());
    }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) line += r[i] + (i + 1 < r.size() ? std::string(w[i] - r[i].size() + 2, ' ') : "");
    out += line + "\n";
  }
  return out;
}

std::vector<std::string> varied_keys(const Plan& plan) {
  std::vector<std::string> keys;
  if (!plan.points.empty())
    for (const auto& [k, v] : plan.points[0].vars) keys.push_back(k);
  return keys;
}

std::string fmt(double v, int precision = 4) {
  if (!std::isfinite(v)) return "-";
  std::ostringstream s;
  s.precision(precision);
  s << v;
  return s.str();
}

}  // namespace

std::string plan_table(const Plan& plan) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head = {"#", "id"};
  for (const auto& k : varied_keys(plan)) head.push_back(k);
  head.push_back("steps");
  rows.push_back(head);
  for (const auto& p : plan.points) {
    std::vector<std::string> r = {std::to_string(p.index), p.id};
    for (const auto& [k, v] : p.vars) r.push_back(v);
    r.push_back(std::to_string(p.target_step));
    rows.push_back(r);
  }
  std::string out = plan.sweep.name + ": " + std::to_string(plan.points.size()) + " points from " + plan.sweep.base +
                    (plan.sweep.fixed_sets.empty() ? "" : " with");
  for (const auto& s : plan.sweep.fixed_sets) out += " " + s;
  out += "\nrun directories: " + plan.runs_dir + "/<id>\n";
  return out + columns(rows);
}

std::string status_table(const Plan& plan) {
  std::vector<std::vector<std::string>> rows = {{"#", "id", "state", "progress", "detail"}};
  std::map<std::string, int> counts;
  for (const auto& p : plan.points) {
    auto st = point_status(p);
    ++counts[state_name(st.state)];
    rows.push_back({std::to_string(p.index), p.id, state_name(st.state),
                    std::to_string(st.step) + "/" + std::to_string(p.target_step), st.detail});
  }
  std::string out = columns(rows);
  out += std::to_string(counts["done"]) + " done, " + std::to_string(counts["running"]) + " running, " +
         std::to_string(counts["failed"]) + " failed, " + std::to_string(counts["pending"]) + " pending\n";
  // Run directories that no planned point owns: most often points of an earlier version of the
  // sweep file (a changed value or base config gives a new id), which would otherwise go unseen.
  std::set<std::string> planned;
  for (const auto& p : plan.points) planned.insert(fs::path(p.run_dir).filename().string());
  std::vector<std::string> others;
  std::error_code ec;
  for (fs::directory_iterator it(plan.runs_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path d = it->path();
    std::error_code e2;
    if (it->is_directory(e2) && !planned.count(d.filename().string()) &&
        (fs::exists(d / "config.yaml", e2) || fs::exists(d / "run.json", e2)))
      others.push_back(d.filename().string());
  }
  if (!others.empty()) {
    std::sort(others.begin(), others.end());
    out += std::to_string(others.size()) + (others.size() == 1 ? " run directory in " : " run directories in ") +
           plan.runs_dir + (others.size() == 1 ? " belongs" : " belong") +
           " to no point of this plan (from an earlier version of the sweep file?):";
    for (size_t i = 0; i < others.size() && i < 5; ++i) out += " " + others[i];
    if (others.size() > 5) out += " and " + std::to_string(others.size() - 5) + " more";
    out += "\n";
  }
  return out;
}

// ---- Report --------------------------------------------------------------------------------

namespace {
const std::vector<std::string> kMetrics = {"val_loss", "train_loss", "spike_magnitude", "sink_mass", "sink_eps",
                                           "sink_eps_max", "sink_eps_share_max"};
// Largest number of the array sink[key] (per-layer Sink^eps), -1 when there is none.
double layer_max(const json& sink, const char* key) {
  double mx = -1;
  if (sink.contains(key) && sink[key].is_array())
    for (const auto& x : sink[key])
      if (x.is_number()) mx = std::max(mx, x.get<double>());
  return mx;
}
}

json report_json(const Plan& plan) {
  json points = json::array();
  std::vector<std::string> variant_order;
  std::map<std::string, std::vector<size_t>> by_variant;
  std::map<std::string, std::set<std::string>> hashes_by_seed;
  for (const auto& p : plan.points) {
    json row = {{"index", p.index}, {"id", p.id}, {"variant", p.variant}, {"seed", p.seed}, {"run_dir", p.run_dir}};
    json vars = json::object();
    for (const auto& [k, v] : p.vars) vars[k] = v;
    row["vars"] = vars;
    auto st = point_status(p);
    row["state"] = state_name(st.state);
    row["step"] = st.step;
    for (const auto& m : kMetrics) row[m] = nullptr;
    const fs::path dir(p.run_dir);
    std::error_code ec;
    if (fs::exists(dir / "metrics.jsonl", ec)) {
      for (const auto& r : data::read_metrics((dir / "metrics.jsonl").string())) {
        std::string split = r.value("split", "");
        if (split == "val" && r.contains("loss") && r["loss"].is_number()) row["val_loss"] = r["loss"];
        if (split == "train" && r.contains("loss") && r["loss"].is_number()) row["train_loss"] = r["loss"];
        if (split == "probe" && r.contains("probe") && r["probe"].is_object()) {
          const json& pr = r["probe"];
          row["probe_step"] = r["step"];
          if (pr.contains("spike") && pr["spike"].contains("magnitude")) row["spike_magnitude"] = pr["spike"]["magnitude"];
          if (pr.contains("sink")) {
            const json& s = pr["sink"];
            if (s.contains("mass")) row["sink_mass"] = s["mass"];
            if (s.contains("sink_eps")) row["sink_eps"] = s["sink_eps"];
            if (const double mx = layer_max(s, "sink_eps_per_layer"); mx >= 0) row["sink_eps_max"] = mx;
            // row-share form (records probed before the probe had it: null)
            if (const double mx = layer_max(s, "sink_eps_share_per_layer"); mx >= 0) row["sink_eps_share_max"] = mx;
          }
        }
      }
    }
    row["data_order_hash"] = nullptr;
    if (fs::exists(dir / "run.json", ec)) {
      try {
        json info = json::parse(read_text((dir / "run.json").string()));
        if (info.contains("data_order_hash")) {
          row["data_order_hash"] = info["data_order_hash"];
          hashes_by_seed[std::to_string(p.seed)].insert(info["data_order_hash"].dump());
        }
      } catch (const json::exception&) {
      }
    }
    if (!by_variant.count(p.variant)) variant_order.push_back(p.variant);
    by_variant[p.variant].push_back(points.size());
    points.push_back(row);
  }
  json variants = json::array();
  for (const auto& v : variant_order) {
    const auto& idx = by_variant[v];
    json row = {{"variant", v}, {"points", idx.size()}};
    json vars = json::object();
    for (const auto& [k, val] : points[idx[0]]["vars"].items())
      if (k != "seed") vars[k] = val;
    row["vars"] = vars;
    json seeds = json::array();
    for (size_t i : idx) seeds.push_back(points[i]["seed"]);
    row["seeds"] = seeds;
    // Only finished points are averaged: a running or stopped point's last probe is from an earlier
    // step than its finished seeds' (its own values stay in `points`).
    std::vector<size_t> done;
    size_t n_left_out = 0;
    for (size_t i : idx) {
      if (points[i]["state"].get<std::string>() == state_name(State::done))
        done.push_back(i);
      else if (std::any_of(kMetrics.begin(), kMetrics.end(), [&](const auto& m) { return points[i][m].is_number(); }))
        ++n_left_out;
    }
    row["finished"] = done.size();
    row["unfinished_with_values"] = n_left_out;
    for (const auto& m : kMetrics) {
      std::vector<double> xs;
      for (size_t i : done)
        if (points[i][m].is_number()) xs.push_back(points[i][m].get<double>());
      json stat = {{"n", xs.size()}, {"mean", nullptr}, {"std", nullptr}};
      if (!xs.empty()) {
        double mean = 0;
        for (double x : xs) mean += x;
        mean /= static_cast<double>(xs.size());
        double var = 0;
        for (double x : xs) var += (x - mean) * (x - mean);
        stat["mean"] = mean;
        stat["std"] = xs.size() > 1 ? std::sqrt(var / static_cast<double>(xs.size() - 1)) : 0.0;
      }
      row[m] = stat;
    }
    variants.push_back(row);
  }
  json order = json::object();
  for (const auto& [seed, hs] : hashes_by_seed) {
    json list = json::array();
    for (const auto& h : hs) list.push_back(json::parse(h));
    order[seed] = {{"matched", hs.size() == 1}, {"hashes", list}};
  }
  return {{"sweep", plan.sweep.name}, {"base", plan.sweep.base}, {"points", points}, {"variants", variants},
          {"data_order", order}, {"init_from_seed", plan.sweep.init_from_seed}};
}

std::string report_csv(const json& report) {
  std::vector<std::string> keys;
  if (!report["variants"].empty())
    for (const auto& [k, v] : report["variants"][0]["vars"].items()) keys.push_back(k);
  std::string out = "variant";
  for (const auto& k : keys) out += "," + k;
  out += ",seeds";
  for (const auto& m : kMetrics) out += "," + m + "_mean," + m + "_std";
  out += "\n";
  auto num = [](const json& x) { return x.is_number() ? fmt(x.get<double>(), 8) : std::string(); };
  for (const auto& v : report["variants"]) {
    out += v["variant"].get<std::string>();
    for (const auto& k : keys) {
      std::string val = v["vars"].value(k, "");
      if (val.find_first_of(",\"") != std::string::npos) {
        std::string q;
        for (char c : val) q += c == '"' ? std::string("\"\"") : std::string(1, c);
        val = "\"" + q + "\"";
      }
      out += "," + val;
    }
    out += "," + std::to_string(v["seeds"].size());
    for (const auto& m : kMetrics) out += "," + num(v[m]["mean"]) + "," + num(v[m]["std"]);
    out += "\n";
  }
  return out;
}

namespace {
// mean ± std of a variant's metric; "(n k)" when fewer or more seeds have it than the row's
// val loss (the seeds column's count): records probed before the probe had a number.
std::string pm(const json& stat, int precision, size_t row_n) {
  if (!stat["mean"].is_number()) return "-";
  const auto n = stat["n"].get<size_t>();
  std::string s = fmt(stat["mean"].get<double>(), precision);
  if (n > 1) s += " ± " + fmt(stat["std"].get<double>(), 2);
  if (n != row_n) s += " (n " + std::to_string(n) + ")";
  return s;
}
std::vector<std::vector<std::string>> variant_rows(const json& report) {
  std::vector<std::vector<std::string>> rows = {
      {"variant", "seeds", "val loss", "spike", "sink mass", "Sink^eps", "max Sink^eps/layer", "row share"}};
  for (const auto& v : report["variants"]) {
    const auto n = v["val_loss"]["n"].get<size_t>();
    rows.push_back({v["variant"].get<std::string>(), std::to_string(n) + "/" + std::to_string(v["seeds"].size()),
                    pm(v["val_loss"], 4, n), pm(v["spike_magnitude"], 4, n), pm(v["sink_mass"], 3, n),
                    pm(v["sink_eps"], 3, n), pm(v["sink_eps_max"], 3, n), pm(v["sink_eps_share_max"], 3, n)});
  }
  return rows;
}
std::string order_line(const json& report) {
  if (report["data_order"].empty()) return "data order: no run.json yet";
  bool all = true;
  std::string per;
  for (const auto& [seed, o] : report["data_order"].items()) {
    all = all && o["matched"].get<bool>();
    per += " seed " + seed + (o["matched"].get<bool>() ? ": matched" : ": DIFFERS");
    per += ";";
  }
  return std::string("data order: ") + (all ? "every point of a seed shares its data order" : "NOT matched") +
         " (" + per.substr(1, per.size() - 2) + ")";
}

// Says how many unfinished points that already have values the variant rows leave out; "" when none.
std::string left_out_line(const json& report) {
  size_t n = 0;
  for (const auto& v : report["variants"]) n += v.value("unfinished_with_values", size_t{0});
  if (n == 0) return "";
  return "variant rows average finished points only: " + std::to_string(n) +
         " unfinished point(s) with values left out (their latest values are in the points of --json)";
}
}  // namespace

std::string report_table(const json& report) {
  const std::string left = left_out_line(report);
  return columns(variant_rows(report)) + order_line(report) + "\n" + (left.empty() ? "" : left + "\n");
}

std::string report_html(const Plan& plan, const json& report) {
  std::vector<analysis::RunData> runs;
  for (const auto& p : plan.points) {
    analysis::RunData r;
    r.name = p.label.empty() ? p.id : p.label;
    r.probe = nullptr;
    const fs::path m = fs::path(p.run_dir) / "metrics.jsonl";
    std::error_code ec;
    if (!fs::exists(m, ec)) continue;
    r.metrics = data::read_metrics(m.string());
    runs.push_back(std::move(r));
  }
  std::string html = analysis::render_html(runs, "sweep " + plan.sweep.name);
  std::string table = "<section id=\"sweep\"><h2>Sweep " + analysis::html_escape(plan.sweep.name) +
                      " (mean ± std over seeds; last in-training probe)</h2><table>";
  bool head = true;
  for (const auto& r : variant_rows(report)) {
    table += "<tr>";
    for (const auto& c : r) table += (head ? "<th>" : "<td>") + analysis::html_escape(c) + (head ? "</th>" : "</td>");
    table += "</tr>";
    head = false;
  }
  table += "</table><p>" + analysis::html_escape(order_line(report)) + "</p>";
  if (const std::string left = left_out_line(report); !left.empty()) table += "<p>" + analysis::html_escape(left) + "</p>";
  table += "</section>";
  size_t body = html.find("<body");
  size_t at = body == std::string::npos ? std::string::npos : html.find('>', body);
  if (at == std::string::npos) return table + html;
  return html.insert(at + 1, table);
}

std::string slurm_script(const Plan& plan, const SlurmOptions& o) {
  const std::string sweep = fs::absolute(plan.sweep.path).lexically_normal().string();
  const std::string logs = fs::absolute(plan.runs_dir).lexically_normal().string();
  std::string s = "#!/bin/bash\n";
  s += "# Slurm job array for sweep '" + plan.sweep.name + "': task i runs point i (ablate sweep plan " + sweep +
       ").\n# Re-submitting is safe: finished points are skipped, interrupted ones resume from their checkpoints.\n";
  s += "#SBATCH --job-name=" + plan.sweep.name + "\n";
  s += "#SBATCH --array=0-" + std::to_string(plan.points.empty() ? 0 : plan.points.size() - 1) + "\n";
  s += "#SBATCH --cpus-per-task=" + std::to_string(o.cpus) + "\n";
  if (o.gpus > 0) s += "#SBATCH --gres=gpu:" + std::to_string(o.gpus) + "\n";
  s += "#SBATCH --time=" + o.time + "\n";
  s += "#SBATCH --output=" + logs + "/slurm-%A_%a.out\n";
  s += "set -euo pipefail\n";
  s += "mkdir -p '" + logs + "'\n";
  s += "cd '" + fs::current_path().string() + "'\n";
  s += "exec '" + o.binary + "' sweep run '" + sweep + "' --only \"$SLURM_ARRAY_TASK_ID\"";
  for (const auto& a : o.extra_args) s += " '" + a + "'";
  s += "\n";
  return s;
}

}  // namespace ablate::sweep
