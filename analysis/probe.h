// The probe: every spike and sink metric of analysis/metrics.h on one model and a fixed probe
// set, in batches of ProbeOptions::batch sequences, with attention maps requested for a subset
// of layers at a time so that memory stays under ProbeExtras::attention_budget_bytes.
// The model is switched to eval mode and run under no-grad; its parameters are never changed.
// Invariant: the same model and sequences give the same report (no sampling except the seeded
// vocabulary sample for ubiquity).
#pragma once

#include "analysis/metrics.h"
#include "analysis/options.h"
#include "modules/model.h"

#include <ATen/Tensor.h>
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

namespace ablate::analysis {

struct ProbeExtras {
  std::vector<int64_t> delimiter_ids;  // token ids that count as delimiters; empty = skip
  int64_t ubiquity_tokens = 64;        // vocabulary sample for spike-token ubiquity; 0 = skip
  double ubiquity_fraction = 0.5;      // a token spikes if its position-0 top-1 >= this x spike magnitude
  double spike_token_fraction = 0.5;   // spike tokens: per-token top-1 >= this x the sequence's top-1
  int64_t attention_budget_bytes = int64_t{256} << 20;  // attention + keys held at once
};

struct AmplifierRow {
  int64_t layer = 0, block = 0;              // FFN block b = 2·layer + 2
  std::vector<std::pair<int64_t, double>> top;  // the 5 largest ||U_k||_F (channel, value)
  double median = 0;                          // median over channels of ||U_k||_F
  double spike_channel_max = 0;               // max over the spike channels
};

// Probe-set loss under one intervention (docs/metrics.md, Interventions).
struct InterventionLoss {
  bool measured = false;
  double loss = 0;   // mean next-token cross entropy (nats) with the intervention
  double delta = 0;  // loss - ProbeReport::loss
};

// The three interventions of PAPER.md §3. The zero / mean interventions set the selected entries
// of the stream after block `block` (only there; later blocks run as usual) to 0 or to their
// channel's mean over the probe set; mask_sink hides the variant's sink key (modules::SinkMask::sink)
// in every layer and head.
struct InterventionReport {
  // "massive": entries massive by Sun et al.'s criterion in the first block b >= 1 that has any;
  // "spike": no massive entry in blocks >= 1, so the spike channels at the spike tokens of the
  // step-up block (token top-1 >= ProbeExtras::spike_token_fraction x the sequence's top-1).
  std::string selection;
  int64_t block = 0;
  int64_t entries = 0;                          // selected entries over the probe set
  std::map<int64_t, int64_t> channels;          // channel -> selected entries
  std::map<int64_t, int64_t> positions;         // stream position -> selected entries
  std::map<int64_t, double> channel_mean;       // channel -> the mean the mean intervention sets
  std::string sink;                             // the key mask_sink hides, in words
  InterventionLoss zero, mean, mask_sink;
  // Variants whose sink is a learned key (k_bias, kv_bias) only: also mask stream position 0
  // (SinkMask::first_position) and both the learned key and position 0 (SinkMask::both).
  InterventionLoss mask_first, mask_both;
};

struct ProbeReport {
  bool compact = false;
  ProbeOptions options;
  int64_t sequences = 0, seq_len = 0, layers = 0, heads = 0, prefix = 0;
  double loss = 0;  // mean next-token cross entropy on the probe set (nats)
  SpikeProfile spike;
  // The inputs of the norms that see the whole stream (B, S, C) — attn_norm / ffn_norm, a
  // post-norm's x + f(x), final_norm — in forward order, each summarised as a spike block (mean
  // over sequences). For post-norm this is where the spike lives before the norm rescales it
  // (PAPER P12); the residual stream (spike) is after it.
  std::vector<std::string> norm_input_names;
  std::vector<BlockSpike> norm_inputs;
  int64_t norm_input_peak = -1;  // index of the largest top1; -1 when no norm sees the stream
  SinkReport sink;
  // Full probe only ------------------------------------------------------------------------
  int64_t geometry_block = 0;          // the peak block: where spike tokens are chosen
  int64_t spike_tokens = 0;            // spike tokens found over all sequences
  double spike_token_cosine = 0;       // mean cosine of norm(h) of spike tokens across sequences
  double normalized_small_fraction = 0;  // fraction of |norm(h)| < 0.01 over spike tokens
  std::string norm_source;             // which norm produced norm(h)
  at::Tensor key_rank;                 // (L, G) effective rank of spike-token keys; undefined if none
  int64_t ubiquity_tokens = 0;
  double ubiquity = 0;                 // relative rule (ProbeExtras::ubiquity_fraction)
  double ubiquity_massive = 0;         // Sun et al.'s criterion with ProbeOptions thresholds
  std::vector<AmplifierRow> amplifier;  // SwiGLU layers whose weights were found
  InterventionReport interventions;
  std::vector<std::string> notes;      // what was not measured, and why
};

// sequences: (N, T) int64 token ids. compact = the in-training summary (spike profile and
// magnitude, massive counts, sink mass, Sink^eps per layer): one pass, no geometry, keys,
// ubiquity, amplifier norms or interventions. The full probe runs four more passes for the
// interventions (one clean, zero, mean, mask_sink).
ProbeReport run_probe(modules::LanguageModel& model, const at::Tensor& sequences,
                      const ProbeOptions& opts, bool compact, const ProbeExtras& extras = {});

nlohmann::json to_json(const ProbeReport& report);
std::string to_table(const ProbeReport& report);

// Tensor -> nested JSON arrays of doubles (undefined -> null).
nlohmann::json tensor_json(const at::Tensor& t);

}  // namespace ablate::analysis
