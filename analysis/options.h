// Options for spike and sink measurement (docs/metrics.md). YAML section `probe:`.
#pragma once

#include <cstdint>
#include <vector>

namespace ablate::analysis {

struct ProbeOptions {
  int64_t sequences = 100;       // probe-set size (Gu et al.: 100)
  int64_t seq_len = 0;           // probe sequence length T; 0 = min(64, model length) (Gu et al.: 64)
  int64_t batch = 10;            // sequences per forward pass (bounds memory)
  double sink_epsilon = 0.3;     // ε of Sink_k^ε
  double massive_abs = 100.0;    // Sun et al.: |h| > massive_abs ...
  double massive_ratio = 1000.0; // ... and |h| >= massive_ratio · median
  int64_t seed = 1234;           // which validation sequences form the probe set
  int64_t train_sequences = 16;  // in-training probes use a smaller set (train.probe.every)
  std::vector<int64_t> delimiters;  // delimiter token ids; empty = the tokenizer's (. , ; : ! ? newline)
};

}  // namespace ablate::analysis
