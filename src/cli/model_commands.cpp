// `ablate model summary`: the layer table and parameter counts of a config's model.
#include <iostream>
#include <memory>

#include "modules/model.h"
#include "src/cli/commands.h"
#include "src/config/config.h"

namespace ablate::cli {

void add_model_commands(CLI::App& app, Action& action) {
  auto* model = app.add_subcommand("model", "inspect the model a configuration builds");
  model->require_subcommand(1);

  struct SummaryArgs {
    std::string file;
    std::vector<std::string> sets;
  };
  auto args = std::make_shared<SummaryArgs>();
  auto* summary = model->add_subcommand(
      "summary", "print the variants, every parameter (name, shape, count, weight decay) and the totals");
  summary->add_option("CONFIG", args->file, "config file (YAML)")->required();
  summary->add_option("--set", args->sets, "override a key: --set model.d_model=64 (repeatable)")->take_all();
  summary->callback([args, &action] {
    action = [args] {
      auto loaded = config::load_file(args->file, args->sets);
      std::cout << modules::model_summary(loaded.experiment.model);
      return 0;
    };
  });
}

}  // namespace ablate::cli
