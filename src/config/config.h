// Loading and printing experiment configurations.
//
// Layering, lowest precedence first: the chain of `base:` files (each relative to the file that
// names it), the file itself, then `--set a.b.c=value` overrides. Decoding is strict: unknown
// keys, wrong types, out-of-range values and inconsistent combinations are UserErrors naming
// the file, line and key. The resolved YAML (to_yaml) lists every key in schema order and
// round-trips: to_yaml(load(to_yaml(x))) == to_yaml(x).
#pragma once

#include <string>
#include <vector>

#include "src/config/experiment.h"
#include "trainers/trainer.h"

namespace YAML {
class Node;
}

namespace ablate::config {

struct Loaded {
  Experiment experiment;  // typed and validated; automatic values (0 = default) filled in
  std::string yaml;       // the resolved configuration as printed by `ablate config show`
};

// Loads a config file with its base chain and the overrides.
Loaded load_file(const std::string& path, const std::vector<std::string>& sets = {});
// Same from YAML text (`source` names it in messages); `base:` is resolved against `base_dir`.
Loaded load_text(const std::string& text, const std::string& source,
                 const std::vector<std::string>& sets = {}, const std::string& base_dir = ".");

// The resolved YAML of an experiment (every key, schema order, shortest round-trip numbers).
std::string to_yaml(const Experiment& e);

// Top-level keys whose change alters what is trained (model, data), as opposed to keys that
// only change how long or how verbosely (steps, logging). Used by resume.
std::vector<std::string> diff_keys(const Experiment& a, const Experiment& b);

// The trainer's inputs from a loaded config (resume_from left empty).
trainers::TrainerSetup to_trainer_setup(const Loaded& loaded, const std::string& run_dir);

// One row per key, for `ablate config keys` and docs/config.md.
struct KeyDoc {
  std::string path, type, default_value, doc;
  bool is_section = false;
};
std::vector<KeyDoc> schema_docs();
std::string schema_markdown();

// Every mapping key in `node`, at any depth, must be a plain name and appear once in its mapping
// (yaml-cpp would keep the first of two equal keys and fail late on a list or mapping as a key).
// Throws UserError "source:line: ..." otherwise.
void check_plain_keys(const YAML::Node& node, const std::string& source);

// Edit distance, used for "did you mean" suggestions.
size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace ablate::config
