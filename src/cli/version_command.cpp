// `ablate version`: what this binary is and what it can use.
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/headeronly/version.h>

#include <iostream>

#include "src/cli/commands.h"

#include "ablate_git_commit.h"

namespace ablate::cli {

void add_version_command(CLI::App& app, Action& action) {
  auto* version = app.add_subcommand("version", "print versions and whether CUDA is usable");
  version->callback([&action] {
    action = [] {
      std::cout << "ablate " << ABLATE_VERSION << " (commit " << ABLATE_GIT_COMMIT << ")\n";
      std::cout << "libtorch " << TORCH_VERSION << "\n";
      const auto& hooks = at::detail::getCUDAHooks();
      bool built = hooks.hasCUDA() || at::hasCUDA();
      long cudart = 0;
      try {
        cudart = hooks.versionCUDART();
      } catch (const std::exception&) {
      }
      std::cout << "cuda build " << (cudart ? std::to_string(cudart / 1000) + "." + std::to_string(cudart % 1000 / 10) : "none")
                << "\n";
      int gpus = built ? hooks.getNumGPUs() : 0;
      std::cout << "cuda usable " << (gpus > 0 ? "yes (" + std::to_string(gpus) + " device(s))" : "no") << "\n";
      std::cout << "cpu threads " << at::get_num_threads() << ", mkl " << (at::hasMKL() ? "yes" : "no") << "\n";
      return 0;
    };
  });
}

}  // namespace ablate::cli
