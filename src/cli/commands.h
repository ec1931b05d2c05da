// Subcommand registration. Each command file adds its subcommands to the CLI11 app; the option
// definitions are the single source of `--help`. A command stores what to run in `action`,
// which main calls after parsing, so that errors are handled in one place (exit codes below).
//   0  success
//   1  internal error (a bug, or a failure outside the user's control)
//   2  user error: bad config, missing or malformed file, bad flag — one line naming the culprit
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace ablate::cli {

using Action = std::function<int()>;

void add_config_commands(CLI::App& app, Action& action);
void add_version_command(CLI::App& app, Action& action);
void add_model_commands(CLI::App& app, Action& action);
void add_data_commands(CLI::App& app, Action& action);
void add_train_command(CLI::App& app, Action& action);
void add_bench_command(CLI::App& app, Action& action);
void apply_runtime_defaults(char** argv);  // OpenMP spin count, malloc thresholds, denormals (run.cpp)
bool set_flush_denormal(bool on);          // FTZ/DAZ on this and the intra-op threads (run.cpp)
void add_analysis_commands(CLI::App& app, Action& action);
void add_sweep_commands(CLI::App& app, Action& action);
void add_launch_command(CLI::App& app, Action& action);  // data-parallel ranks (launch_command.cpp)
void add_export_commands(CLI::App& app, Action& action);  // export hf, export tensorboard

// Runs the program: parses argv, sets up logging, dispatches, maps errors to exit codes.
int run(int argc, char** argv);

}  // namespace ablate::cli
