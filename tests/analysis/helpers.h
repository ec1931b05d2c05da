// Helpers shared by the analysis tests.
#pragma once

#include "modules/options.h"

namespace ablate::analysis::testing {

// The random model the probe tests run on: two layers of two 16-wide heads, 64 tokens, 16 positions.
inline modules::ModelOptions tiny() {
  modules::ModelOptions o;
  o.d_model = 32;
  o.n_layers = 2;
  o.n_heads = 2;
  o.head_dim = 16;
  o.vocab = 64;
  o.max_seq_len = 16;
  return o;
}

}  // namespace ablate::analysis::testing
