#include "modules/registry.h"

namespace ablate::modules {

// TODO(#3): these lists become the keys of the component registries (norms.cpp, attention.cpp,
// ...); until then they are the accepted YAML values.
const std::vector<std::string>& norm_type_names() {
  static const std::vector<std::string> n{"rmsnorm", "layernorm", "dyt"};
  return n;
}
const std::vector<std::string>& norm_placement_names() {
  static const std::vector<std::string> n{"pre", "post", "sandwich", "none"};
  return n;
}
const std::vector<std::string>& attention_variant_names() {
  static const std::vector<std::string> n{"softmax", "sigmoid", "softmax1", "k_bias", "kv_bias", "sink_token"};
  return n;
}
const std::vector<std::string>& gate_kind_names() {
  static const std::vector<std::string> n{"none", "conditional", "static", "position", "token"};
  return n;
}
const std::vector<std::string>& gate_granularity_names() {
  static const std::vector<std::string> n{"headwise", "elementwise"};
  return n;
}
const std::vector<std::string>& ffn_type_names() {
  static const std::vector<std::string> n{"swiglu", "gelu", "linear", "none"};
  return n;
}
const std::vector<std::string>& position_type_names() {
  static const std::vector<std::string> n{"rope", "learned", "none"};
  return n;
}

}  // namespace ablate::modules
