// The whole experiment as typed options: one struct per floor, nested like the YAML.
#pragma once

#include <cstdint>
#include <string>

#include "analysis/options.h"
#include "data/options.h"
#include "modules/options.h"
#include "trainers/options.h"

namespace ablate::config {

struct Experiment {
  std::string name = "";        // free text; sweeps set it to the run id
  int64_t seed = 0;             // model initialisation and every RNG except the data order
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  std::string run_dir = "";     // empty = runs/<name or config file stem>
  modules::ModelOptions model;
  data::DataOptions data;
  trainers::TrainOptions train;
  analysis::ProbeOptions probe;
};

}  // namespace ablate::config
