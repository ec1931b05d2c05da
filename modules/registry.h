// Variant registries, one per axis, keyed by the YAML string. The config layer validates names
// against `names()`; the model builds components through `create()`. Adding a variant touches one
// .cpp (its registration) and nothing else; tests iterate over names() to cover it.
#pragma once

#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace ablate::modules {

template <class Factory>
class Registry {
 public:
  explicit Registry(std::string axis) : axis_(std::move(axis)) {}
  void add(const std::string& name, Factory factory) {
    order_.push_back(name);
    factories_[name] = std::move(factory);
  }
  bool contains(const std::string& name) const { return factories_.count(name) > 0; }
  const Factory& get(const std::string& name) const {
    auto it = factories_.find(name);
    if (it == factories_.end()) {
      std::string known;
      for (const auto& n : order_) known += (known.empty() ? "" : ", ") + n;
      throw std::invalid_argument("unknown " + axis_ + " '" + name + "' (known: " + known + ")");
    }
    return it->second;
  }
  const std::vector<std::string>& names() const { return order_; }
  const std::string& axis() const { return axis_; }

 private:
  std::string axis_;
  std::vector<std::string> order_;  // registration order = documentation order
  std::map<std::string, Factory> factories_;
};

// The names registered on each axis (what the YAML accepts), in documentation order.
const std::vector<std::string>& norm_type_names();
const std::vector<std::string>& norm_placement_names();
const std::vector<std::string>& attention_variant_names();
const std::vector<std::string>& gate_kind_names();
const std::vector<std::string>& gate_granularity_names();
const std::vector<std::string>& ffn_type_names();
const std::vector<std::string>& position_type_names();

}  // namespace ablate::modules
