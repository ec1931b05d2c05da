// `ablate config show|keys`: the resolved configuration and the key reference.
#include <iostream>

#include "src/cli/commands.h"
#include "src/config/config.h"

namespace ablate::cli {

void add_config_commands(CLI::App& app, Action& action) {
  auto* config = app.add_subcommand("config", "inspect configurations");
  config->require_subcommand(1);

  struct ShowArgs {
    std::string file;
    std::vector<std::string> sets;
  };
  auto args = std::make_shared<ShowArgs>();
  auto* show = config->add_subcommand("show", "print the fully resolved YAML of a config (base: + file + --set)");
  show->add_option("CONFIG", args->file, "config file (YAML)")->required();
  show->add_option("--set", args->sets, "override a key: --set model.d_model=64 (repeatable)")->take_all();
  show->callback([args, &action] {
    action = [args] {
      std::cout << config::load_file(args->file, args->sets).yaml;
      return 0;
    };
  });

  auto markdown = std::make_shared<bool>(false);
  auto* keys = config->add_subcommand("keys", "list every configuration key with its type, default and meaning");
  keys->add_flag("--markdown", *markdown, "print the table of docs/config.md");
  keys->callback([markdown, &action] {
    action = [markdown] {
      if (*markdown) {
        std::cout << config::schema_markdown();
        return 0;
      }
      for (const auto& k : config::schema_docs()) {
        if (k.is_section) {
          std::cout << k.path << ":  # " << k.doc << "\n";
        } else {
          std::cout << "  " << k.path << " = " << k.default_value << "  (" << k.type << ")  " << k.doc << "\n";
        }
      }
      return 0;
    };
  });
}

}  // namespace ablate::cli
