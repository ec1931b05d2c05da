#include <c10/util/Exception.h>

#include <iostream>

#include "data/core/errors.h"
#include "data/core/log.h"
#include "src/cli/commands.h"

namespace ablate::cli {
int run(int argc, char** argv) {
  apply_runtime_defaults(argv);
  CLI::App app{"Ablate: train and compare transformer ablations (spikes and sinks)", "ablate"};
  app.require_subcommand(1);
  app.failure_message(CLI::FailureMessage::simple);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace | debug | info | warn | error | off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->capture_default_str();
  Action action;
  add_config_commands(app, action);
  add_version_command(app, action);
  add_model_commands(app, action);
  add_data_commands(app, action);
  add_train_command(app, action);
  add_bench_command(app, action);
  add_analysis_commands(app, action);
  add_sweep_commands(app, action);
  add_launch_command(app, action);
  add_export_commands(app, action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "ablate: error: " << e.what() << " (see ablate --help)\n";
    return 2;
  }
  log::Level level = log::Level::info;
  log::parse_level(log_level, level);  // validated by the option's check
  log::set_level(level);
  try {
    return action ? action() : 0;
  } catch (const UserError& e) {
    std::cerr << "ablate: error: " << e.what() << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "ablate: internal error (LibTorch): " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "ablate: internal error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace ablate::cli
