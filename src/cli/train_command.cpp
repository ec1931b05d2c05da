// `ablate train CONFIG.yaml [--set k=v ...] [--run-dir DIR] [--resume [RUN_DIR]]`
//
// A run directory with a complete checkpoint is continued, whether --resume is given or the
// same command is simply run again. Continuing with a changed model, data or optimisation is
// refused; keys that only change how long or how verbosely the run goes are allowed and
// reported (kResumableKeys).
#include <c10/util/Exception.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/core/errors.h"
#include "data/core/log.h"
#include "data/formats/atomic_dir.h"
#include "src/cli/commands.h"
#include "src/config/config.h"
#include "trainers/checkpoint.h"
#include "trainers/trainer.h"

#include "ablate_git_commit.h"

namespace fs = std::filesystem;

namespace ablate::cli {
namespace {

// Keys that may change between a checkpoint and its resumption without changing what is trained.
bool resumable_key(const std::string& key) {
  static const char* prefixes[] = {"name",          "run_dir",      "device",       "train.steps",
                                   "train.tokens",  "train.hard_stop", "train.eval.", "train.checkpoint.",
                                   "train.probe.",  "train.log.",   "train.dist.", "probe."};
  for (const char* p : prefixes)
    if (key.rfind(p, 0) == 0) return true;
  return false;
}

std::string value_at(const std::string& yaml, const std::string& key) {
  // The resolved YAML has one key per line; find the leaf under its sections.
  std::istringstream in(yaml);
  std::string line;
  std::vector<std::string> stack;
  while (std::getline(in, line)) {
    size_t indent = line.find_first_not_of(' ');
    if (indent == std::string::npos) continue;
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    size_t depth = indent / 2;
    stack.resize(depth);
    stack.push_back(line.substr(indent, colon - indent));
    std::string path;
    for (size_t i = 0; i < stack.size(); ++i) path += (i ? "." : "") + stack[i];
    if (path == key) {
      std::string v = colon + 1 < line.size() ? line.substr(colon + 1) : "";
      return v.empty() ? "" : v.substr(v.find_first_not_of(' ') == std::string::npos ? 0 : v.find_first_not_of(' '));
    }
  }
  return "?";
}

struct TrainArgs {
  std::string config;
  std::vector<std::string> sets;
  std::string run_dir;
  std::string resume;  // RUN_DIR given to --resume
  bool resume_flag = false;
  bool run_dir_given = false;
};

// One directory however it is spelled: relative or absolute, with "./", ".." or a trailing '/'.
fs::path same_dir_key(const std::string& dir) {
  const fs::path p = fs::absolute(dir).lexically_normal();
  return p.has_filename() ? p : p.parent_path();
}

int run_train(const TrainArgs& a) {
  if (a.run_dir_given && a.run_dir.empty()) throw UserError("--run-dir: empty; give a directory");
  if (!a.run_dir.empty() && !a.resume.empty() && same_dir_key(a.run_dir) != same_dir_key(a.resume))
    throw UserError("--resume " + a.resume + " and --run-dir " + a.run_dir + " name different run directories; give one");
  std::string config_path = a.config;
  if (config_path.empty()) {
    if (a.resume.empty()) throw UserError("train: give a CONFIG.yaml, or --resume RUN_DIR");
    config_path = (fs::path(a.resume) / "config.yaml").string();
    std::error_code ec;
    if (!fs::exists(config_path, ec)) throw UserError(a.resume + ": not a run directory (no config.yaml)");
  }
  auto loaded = config::load_file(config_path, a.sets);
  auto& e = loaded.experiment;
  std::string run_dir = !a.run_dir.empty() ? a.run_dir : !a.resume.empty() ? a.resume : e.run_dir;
  if (run_dir.empty()) run_dir = (fs::path("runs") / (e.name.empty() ? fs::path(config_path).stem().string() : e.name)).string();

  trainers::TrainerSetup setup = config::to_trainer_setup(loaded, run_dir);
  setup.git_commit = ABLATE_GIT_COMMIT;
  setup.dist = trainers::dist_env_from_environment();  // torchrun-style variables (ablate launch)

  auto latest = trainers::find_latest_checkpoint(run_dir);
  if ((a.resume_flag || !a.resume.empty()) && !latest)
    throw UserError(run_dir + ": no complete checkpoint to resume from");
  if (!latest && trainers::has_checkpoint_dirs(run_dir))  // never start over on top of a run's records
    throw UserError(run_dir + "/checkpoints: every checkpoint is damaged (see the warnings); nothing was changed: "
                              "repair one, or start over in a new --run-dir");
  if (latest) {
    std::ifstream in(fs::path(*latest) / "config.yaml");
    std::stringstream ss;
    ss << in.rdbuf();
    auto previous = config::load_text(ss.str(), *latest + "/config.yaml");
    std::vector<std::string> refused, allowed;
    for (const auto& key : config::diff_keys(previous.experiment, e))
      (resumable_key(key) ? allowed : refused).push_back(key);
    if (!refused.empty()) {
      std::string list;
      for (const auto& k : refused)
        list += (list.empty() ? "" : ", ") + k + " (" + value_at(previous.yaml, k) + " -> " + value_at(loaded.yaml, k) + ")";
      throw UserError(config_path + ": cannot resume " + run_dir + ": changed " + list +
                      "; revert the change or use a new run directory (--run-dir)");
    }
    for (const auto& k : allowed)
      log::info(log::str("resume: ", k, " changed ", value_at(previous.yaml, k), " -> ", value_at(loaded.yaml, k)));
    setup.resume_from = *latest;
  }
  // Rank 0 owns the run directory; the trainer writes its config.yaml once the start or the
  // resumption has succeeded, so a refused resume leaves the directory as it was.
  if (setup.dist.rank == 0) data::make_dirs(run_dir);

  try {
    trainers::train(setup);
  } catch (const trainers::DistributedError& e) {
    // The surviving ranks of a failed group: one line, non-zero, the run directory as it was
    // at the last checkpoint (resumable).
    log::error(e.what());
    return 1;
  } catch (const c10::OutOfMemoryError&) {
    throw;  // the configuration's doing on every rank: exit 2 (run.cpp)
  } catch (const c10::Error& e) {
    if (!setup.dist.active()) throw;
    // A collective inside the backward pass (the Reducer's bucket all-reduce) failed. Any other
    // error (a non-finite loss, a full disk) keeps its own message (run.cpp).
    log::error(trainers::failure_message(setup.dist.rank, "training step", e.what_without_backtrace()));
    return 1;
  }
  return 0;
}

}  // namespace

void add_train_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<TrainArgs>();
  auto* train = app.add_subcommand("train", "train one model; continues a run directory that has checkpoints");
  train->add_option("CONFIG", args->config, "config file (YAML); optional with --resume RUN_DIR");
  train->add_option("--set", args->sets, "override a key: --set model.d_model=64 (repeatable)")->take_all();
  train->add_option("--run-dir", args->run_dir, "run directory (default: the config's run_dir, else runs/<name>)");
  train->add_option("--resume", args->resume, "continue RUN_DIR from its latest complete checkpoint")
      ->expected(0, 1);
  train->callback([args, train, &action] {
    args->resume_flag = train->count("--resume") > 0;
    args->run_dir_given = train->count("--run-dir") > 0;
    action = [args] { return run_train(*args); };
  });
}

}  // namespace ablate::cli
