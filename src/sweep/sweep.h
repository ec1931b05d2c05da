// Sweeps (docs/sweeps.md): one base config and the axes that vary, expanded into points, each
// trained in its own run directory by a child `ablate train`, with state that lives only in the
// run directories (so a sweep is safe to re-run after a crash of the sweep itself).
//
// A sweep file:
//   base: configs/demo.yaml        # relative to the sweep file
//   name: norm-placement           # default: the file's stem
//   grid:  {key: [v, ...], ...}    # Cartesian product, first key varies slowest
//   zip:   {key: [v, ...], ...}    # varied together (equal lengths), one axis of the product
//   seeds: [0, 1, 2]               # innermost axis; each sets `seed` and `data.seed`
//   set:   {key: v, ...}           # fixed overrides for every point
//   init_from_seed: true           # sets model.init.by_name on every point (shared initial weights)
// A point is the list of `--set key=value` overrides applied to the base by config::load_file.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ablate::sweep {

struct Axis {
  std::vector<std::string> keys;                 // one key (grid) or several (zip)
  std::vector<std::vector<std::string>> values;  // values[i][k]: flow YAML of key k at step i
};

struct SweepFile {
  std::string path, dir, name, base;   // base resolved against the sweep file's folder
  std::vector<Axis> axes;              // grid keys, then the zip axis (if any)
  std::vector<int64_t> seeds;          // empty = the base's seed, one point per combination
  std::vector<std::string> fixed_sets; // `set:` of the file, then --set of the command line
  bool init_from_seed = false;
};

struct Point {
  size_t index = 0;
  std::string id;                                         // readable name + '_' + 8 hex digits
  std::string label;                                      // readable name (no hash)
  std::string variant;                                    // label without the seed part
  int64_t seed = 0;
  std::vector<std::pair<std::string, std::string>> vars;  // what differs: key, value
  std::vector<std::string> sets;                          // overrides, name=<id> last
  std::string run_dir;
  std::string yaml;                                       // resolved config (name = id)
  int64_t target_step = 0;                                // total steps, or hard_stop
};

struct Plan {
  SweepFile sweep;
  std::string runs_dir;  // <sweep dir>/runs/<name>, or --out
  std::vector<Point> points;
};

// Strict parse: unknown keys, wrong types and zip length mismatches are UserErrors naming
// file:line and the key. `extra_sets` (command-line --set) apply to every point after `set:`.
SweepFile parse_sweep(const std::string& path, const std::vector<std::string>& extra_sets = {});
// Expands and validates every point (config::load_file); a bad point is a UserError naming it.
Plan make_plan(const SweepFile& sweep, const std::string& out_dir = "");

// Lower-case [a-z0-9._=-], other characters become '-', runs of '-' collapse.
std::string sanitise(const std::string& text);

// ---- State of a point (from its run directory) -------------------------------------------

enum class State { pending, running, done, failed };
const char* state_name(State s);
struct PointStatus {
  State state = State::pending;
  int64_t step = 0;         // progress: the later of the last metrics step and the latest checkpoint
  int64_t checkpoint = -1;  // latest complete checkpoint step, -1 = none
  std::string detail;       // failure message; pace of a running point; an interrupted one's checkpoint
};
PointStatus point_status(const Point& p);
// The final checkpoint exists (step == target) or the done marker is there.
bool point_finished(const Point& p);

// ---- Running -----------------------------------------------------------------------------

struct RunOptions {
  int slots = 1;
  std::vector<std::string> devices;  // CUDA_VISIBLE_DEVICES per slot (round robin)
  int retries = 0;
  int only = -1;                     // run only this point index
  std::string binary;                // default /proc/self/exe
  double progress_every = 60;        // seconds between progress lines of the running points; 0: none
};
struct RunSummary {
  int done = 0, skipped = 0, failed = 0;
  std::vector<std::string> failures;  // "id: message"
};
RunSummary run_plan(const Plan& plan, const RunOptions& options);

// ---- Reporting ---------------------------------------------------------------------------

// {"sweep", "points": [...], "variants": [...], "data_order": {seed: {"matched", "hashes"}}}
nlohmann::json report_json(const Plan& plan);
std::string report_csv(const nlohmann::json& report);
std::string report_table(const nlohmann::json& report);
std::string report_html(const Plan& plan, const nlohmann::json& report);

std::string plan_table(const Plan& plan);
std::string status_table(const Plan& plan);

struct SlurmOptions {
  std::string binary, time = "24:00:00";
  int gpus = 0, cpus = 8;
  std::vector<std::string> extra_args;  // forwarded to `sweep run` (e.g. --set, --out)
};
std::string slurm_script(const Plan& plan, const SlurmOptions& options);

}  // namespace ablate::sweep
