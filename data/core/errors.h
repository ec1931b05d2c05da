// UserError: a problem with something the user gave us (config, data file, checkpoint, flag).
// The CLI prints its message on one line and exits with status 2. Messages name the file and
// the key or position: "configs/x.yaml:12: model.d_modle: unknown key (did you mean d_model?)".
// Every floor may throw it; it lives on the lowest floor so that all of them can.
#pragma once

#include <stdexcept>
#include <string>

namespace ablate {

class UserError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace ablate
