#include "src/config/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "data/core/errors.h"
#include "src/config/schema.h"
#include "trainers/trainer.h"

namespace fs = std::filesystem;

namespace ablate::config {
namespace {

// Where each key (dotted path) was last set: "file:line" or "--set".
using Sources = std::map<std::string, std::string>;

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::stringstream ss(path);
  std::string part;
  while (std::getline(ss, part, '.')) parts.push_back(part);
  return parts;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

std::string format_double(double x) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), x);
  std::string s(buf, res.ptr);
  // Keep doubles recognisable as floats in the printed YAML ("10000" -> "10000.0").
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

// --- Collecting the schema -----------------------------------------------------------------

struct KeyCollector {
  std::set<std::string> fields, sections;
  std::vector<KeyDoc> docs;
  void section(const std::string& path, const std::string& doc) {
    sections.insert(path);
    docs.push_back({path, "section", "", doc, true});
  }
  template <class T>
  void field(const std::string& path, T& value, const std::string& doc, Range r) {
    fields.insert(path);
    docs.push_back({path, type_name(value, r), render(value), doc, false});
  }
  void choice(const std::string& path, std::string& value, const std::string& doc,
              const std::vector<std::string>& allowed) {
    fields.insert(path);
    docs.push_back({path, "one of: " + join(allowed, ", "), value, doc, false});
  }
  static std::string bound(double x) {
    return x == std::floor(x) && std::fabs(x) <= 9007199254740992.0 ? std::to_string(static_cast<int64_t>(x)) : format_double(x);
  }
  static std::string range_text(Range r) {
    if (std::isinf(r.min) && std::isinf(r.max)) return "";
    std::string out = " in [" + (std::isinf(r.min) ? std::string("-inf") : bound(r.min)) + ", " +
                      (std::isinf(r.max) ? std::string("inf") : bound(r.max)) + "]";
    return out;
  }
  static std::string type_name(int64_t&, Range r) { return "integer" + range_text(r); }
  static std::string type_name(double&, Range r) { return "number" + range_text(r); }
  static std::string type_name(bool&, Range) { return "boolean"; }
  static std::string type_name(std::string&, Range) { return "string"; }
  static std::string type_name(std::vector<int64_t>&, Range) { return "list of integers"; }
  static std::string render(int64_t v) { return std::to_string(v); }
  static std::string render(double v) { return format_double(v); }
  static std::string render(bool v) { return v ? "true" : "false"; }
  static std::string render(const std::string& v) { return v.empty() ? "\"\"" : v; }
  static std::string render(const std::vector<int64_t>& v) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
    return out + "]";
  }
};

const KeyCollector& schema_keys() {
  static const KeyCollector keys = [] {
    KeyCollector c;
    Experiment e;
    walk_schema(c, e);
    return c;
  }();
  return keys;
}

// --- Suggestions ---------------------------------------------------------------------------

std::string suggest_key(const std::string& path) {
  const auto& keys = schema_keys();
  auto parts = split_path(path);
  std::string parent = parts.size() > 1 ? path.substr(0, path.rfind('.')) : "";
  const std::string& leaf = parts.back();
  std::vector<std::string> all(keys.fields.begin(), keys.fields.end());
  all.insert(all.end(), keys.sections.begin(), keys.sections.end());
  // 1. A near spelling among the siblings.
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& k : all) {
    std::string kparent = k.find('.') == std::string::npos ? "" : k.substr(0, k.rfind('.'));
    if (kparent != parent) continue;
    std::string kleaf = k.substr(k.rfind('.') == std::string::npos ? 0 : k.rfind('.') + 1);
    size_t d = edit_distance(leaf, kleaf);
    if (d < best_d) best_d = d, best = k;
  }
  if (!best.empty() && best_d <= std::max<size_t>(2, leaf.size() / 3)) return best;
  // 2. The same name in another section (a key put in the wrong place).
  for (const auto& k : all) {
    std::string kleaf = k.substr(k.rfind('.') == std::string::npos ? 0 : k.rfind('.') + 1);
    if (kleaf == leaf) return k;
  }
  // 3. The nearest full path anywhere.
  best.clear();
  best_d = std::string::npos;
  for (const auto& k : all) {
    size_t d = edit_distance(path, k);
    if (d < best_d) best_d = d, best = k;
  }
  if (best_d <= std::max<size_t>(3, path.size() / 3)) return best;
  // 4. Otherwise list the valid keys of that section.
  std::vector<std::string> siblings;
  for (const auto& k : all) {
    std::string kparent = k.find('.') == std::string::npos ? "" : k.substr(0, k.rfind('.'));
    if (kparent == parent) siblings.push_back(k.substr(parent.empty() ? 0 : parent.size() + 1));
  }
  return siblings.empty() ? "" : "one of: " + join(siblings, ", ");
}

std::string suggest_value(const std::string& value, const std::vector<std::string>& allowed) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& a : allowed) {
    size_t d = edit_distance(value, a);
    if (d < best_d) best_d = d, best = a;
  }
  return best_d <= std::max<size_t>(2, value.size() / 3) ? best : "";
}

// --- Layering ------------------------------------------------------------------------------

void record_sources(const YAML::Node& node, const std::string& prefix, const std::string& file,
                    Sources& sources) {
  if (!node.IsMap()) return;
  for (const auto& kv : node) {
    std::string key = kv.first.as<std::string>();
    std::string path = prefix.empty() ? key : prefix + "." + key;
    sources[path] = file + ":" + std::to_string(kv.first.Mark().line + 1);
    record_sources(kv.second, path, file, sources);
  }
}

YAML::Node merge(const YAML::Node& base, const YAML::Node& over) {
  if (!base.IsMap() || !over.IsMap()) return YAML::Clone(over);
  YAML::Node out = YAML::Clone(base);
  for (const auto& kv : over) {
    std::string key = kv.first.as<std::string>();
    const YAML::Node& cur = static_cast<const YAML::Node&>(out)[key];
    if (cur && cur.IsMap() && kv.second.IsMap()) {
      out[key] = merge(cur, kv.second);
    } else {
      out[key] = YAML::Clone(kv.second);
    }
  }
  return out;
}

YAML::Node parse_yaml(const std::string& text, const std::string& source) {
  try {
    const auto docs = YAML::LoadAll(text);
    for (size_t i = 1; i < docs.size(); ++i)  // an empty document (a trailing '---') is harmless
      if (docs[i] && !docs[i].IsNull())
        throw UserError(source + ":" + std::to_string(docs[i].Mark().line + 1) +
                        ": a second YAML document ('---'); a config file holds one");
    YAML::Node node = docs.empty() ? YAML::Node() : docs[0];
    if (!node || node.IsNull()) return YAML::Node(YAML::NodeType::Map);
    if (!node.IsMap()) throw UserError(source + ": the top level must be a mapping of keys");
    check_plain_keys(node, source);
    return node;
  } catch (const YAML::Exception& ex) {
    throw UserError(source + ":" + std::to_string(ex.mark.line + 1) + ":" +
                    std::to_string(ex.mark.column + 1) + ": YAML syntax error: " + ex.msg);
  }
}

std::string read_file_text(const std::string& path, const std::string& referrer) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw UserError((referrer.empty() ? "" : referrer + ": ") + path + ": no such config file");
  if (fs::is_directory(path, ec)) throw UserError(path + ": is a directory, expected a YAML file");
  std::ifstream in(path);
  if (!in) throw UserError(path + ": cannot read the file");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

YAML::Node load_layers(const std::string& text, const std::string& source, const std::string& base_dir,
                       Sources& sources, std::vector<std::string>& chain) {
  if (std::find(chain.begin(), chain.end(), source) != chain.end())
    throw UserError(source + ": base: inheritance cycle (" + join(chain, " -> ") + " -> " + source + ")");
  chain.push_back(source);
  YAML::Node node = parse_yaml(text, source);
  YAML::Node merged(YAML::NodeType::Map);
  if (const YAML::Node base = static_cast<const YAML::Node&>(node)["base"]) {
    std::vector<std::string> bases;
    std::string where = source + ":" + std::to_string(base.Mark().line + 1);
    if (base.IsScalar()) {
      bases.push_back(base.Scalar());
    } else if (base.IsSequence()) {
      for (const auto& b : base) {
        if (!b.IsScalar()) throw UserError(where + ": base: expected a file name or a list of file names");
        bases.push_back(b.Scalar());
      }
    } else {
      throw UserError(where + ": base: expected a file name or a list of file names");
    }
    for (const auto& b : bases) {
      fs::path p = fs::path(b).is_absolute() ? fs::path(b) : fs::path(base_dir) / b;
      std::string ptext = read_file_text(p.lexically_normal().string(), where + ": base");
      YAML::Node layer = load_layers(ptext, p.lexically_normal().string(),
                                     p.parent_path().string(), sources, chain);
      merged = merge(merged, layer);
    }
    node.remove("base");
  }
  record_sources(node, "", source, sources);
  chain.pop_back();
  return merge(merged, node);
}

void apply_set(YAML::Node& root, const std::string& assignment, Sources& sources) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw UserError("--set '" + assignment + "': expected key=value, e.g. --set model.d_model=64");
  std::string key = assignment.substr(0, eq);
  std::string text = assignment.substr(eq + 1);
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception& ex) {
    throw UserError("--set " + assignment + ": cannot parse the value: " + ex.msg);
  }
  if (!value || value.IsNull()) value = YAML::Node(std::string());
  check_plain_keys(value, "--set " + assignment);
  auto parts = split_path(key);
  for (const auto& p : parts)
    if (p.empty()) throw UserError("--set " + assignment + ": empty component in key '" + key + "'");
  YAML::Node cur;
  cur.reset(root);
  std::string path;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    path += (i ? "." : "") + parts[i];
    const YAML::Node existing = static_cast<const YAML::Node&>(cur)[parts[i]];
    if (!existing || existing.IsNull()) {
      cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
      sources[path] = "--set " + assignment;
    } else if (!existing.IsMap()) {
      throw UserError("--set " + assignment + ": '" + path + "' is a value, not a section");
    }
    YAML::Node next = cur[parts[i]];
    cur.reset(next);
  }
  cur[parts.back()] = value;
  sources[key] = "--set " + assignment;
  record_sources(value, key, "--set " + assignment, sources);
  for (auto& [k, v] : sources)
    if (k.rfind(key + ".", 0) == 0) v = "--set " + assignment;
}

// --- Reading typed values -------------------------------------------------------------------

class Reader {
 public:
  Reader(const YAML::Node& root, const Sources& sources, std::string fallback)
      : root_(root), sources_(sources), fallback_(std::move(fallback)) {}

  void section(const std::string&, const std::string&) {}

  template <class T>
  void field(const std::string& path, T& value, const std::string&, Range r) {
    YAML::Node node = lookup(path);
    if (!node) return;  // default stays
    read(path, node, value, r);
  }

  void choice(const std::string& path, std::string& value, const std::string&,
              const std::vector<std::string>& allowed) {
    YAML::Node node = lookup(path);
    if (!node) return;
    std::string v;
    read(path, node, v, kAny);
    if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
      std::string hint = suggest_value(v, allowed);
      fail(path, "unknown value '" + v + "'" + (hint.empty() ? "" : " (did you mean '" + hint + "'?)") +
                     "; known: " + join(allowed, ", "));
    }
    value = v;
  }

  [[noreturn]] void fail(const std::string& path, const std::string& msg) const {
    auto it = sources_.find(path);
    std::string where = it != sources_.end() ? it->second : fallback_;
    throw UserError(where + ": " + path + ": " + msg);
  }

 private:
  YAML::Node lookup(const std::string& path) const {
    YAML::Node cur;
    cur.reset(root_);
    for (const auto& part : split_path(path)) {
      if (!cur.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
      const YAML::Node next = static_cast<const YAML::Node&>(cur)[part];
      if (!next) return YAML::Node(YAML::NodeType::Undefined);
      cur.reset(next);
    }
    return cur;
  }

  void require_scalar(const std::string& path, const YAML::Node& node, const std::string& what) const {
    if (!node.IsScalar()) fail(path, "expected " + what + ", got a " + (node.IsMap() ? "mapping" : "list"));
  }
  void check_range(const std::string& path, double v, Range r) const {
    if (v < r.min || v > r.max) fail(path, "value " + KeyCollector::bound(v) + " is out of range" + KeyCollector::range_text(r));
  }
  void read(const std::string& path, const YAML::Node& node, int64_t& out, Range r) const {
    require_scalar(path, node, "an integer");
    const std::string& s = node.Scalar();
    int64_t v = 0;
    auto res = std::from_chars(s.data(), s.data() + s.size(), v);
    if (res.ec != std::errc() || res.ptr != s.data() + s.size() || s.empty())
      fail(path, "expected an integer, got '" + s + "'");
    check_range(path, static_cast<double>(v), r);
    out = v;
  }
  void read(const std::string& path, const YAML::Node& node, double& out, Range r) const {
    require_scalar(path, node, "a number");
    const std::string& s = node.Scalar();
    double v = 0;
    try {
      v = node.as<double>();
    } catch (const YAML::Exception&) {
      fail(path, "expected a number, got '" + s + "'");
    }
    if (!std::isfinite(v)) fail(path, "expected a finite number, got '" + s + "'");
    check_range(path, v, r);
    out = v;
  }
  void read(const std::string& path, const YAML::Node& node, bool& out, Range) const {
    require_scalar(path, node, "true or false");
    const std::string& s = node.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") out = true;
    else if (s == "false" || s == "False" || s == "FALSE") out = false;
    else fail(path, "expected true or false, got '" + s + "'");
  }
  void read(const std::string& path, const YAML::Node& node, std::string& out, Range) const {
    if (node.IsNull()) {
      out.clear();
      return;
    }
    require_scalar(path, node, "a string");
    out = node.Scalar();
  }
  void read(const std::string& path, const YAML::Node& node, std::vector<int64_t>& out, Range r) const {
    if (node.IsNull()) {
      out.clear();
      return;
    }
    if (!node.IsSequence()) fail(path, "expected a list of integers, e.g. [1, 64]");
    std::vector<int64_t> v;
    for (const auto& item : node) {
      int64_t x = 0;
      read(path, item, x, r);
      v.push_back(x);
    }
    out = v;
  }

  const YAML::Node& root_;
  const Sources& sources_;
  std::string fallback_;
};

void check_unknown_keys(const YAML::Node& node, const std::string& prefix, const Sources& sources,
                        const std::string& fallback) {
  const auto& keys = schema_keys();
  for (const auto& kv : node) {
    std::string key = kv.first.as<std::string>();
    std::string path = prefix.empty() ? key : prefix + "." + key;
    auto src = sources.count(path) ? sources.at(path) : fallback;
    if (keys.fields.count(path)) continue;
    if (keys.sections.count(path)) {
      if (kv.second.IsNull()) continue;  // an empty section keeps its defaults
      if (!kv.second.IsMap()) throw UserError(src + ": " + path + ": is a section, expected a mapping of keys");
      check_unknown_keys(kv.second, path, sources, fallback);
      continue;
    }
    std::string hint = suggest_key(path);
    std::string msg = src + ": " + path + ": unknown key";
    if (hint.rfind("one of: ", 0) == 0) msg += " (valid here: " + hint.substr(8) + ")";
    else if (!hint.empty()) msg += " (did you mean '" + hint + "'?)";
    throw UserError(msg);
  }
}

// --- Cross-field checks and automatic values -------------------------------------------------

void validate(Experiment& e, const Reader& r) {
  auto& m = e.model;
  auto& d = e.data;
  auto& t = e.train;
  if (m.n_kv_heads > 0 && m.n_heads % m.n_kv_heads != 0)
    r.fail("model.n_kv_heads", "n_heads (" + std::to_string(m.n_heads) + ") must be a multiple of n_kv_heads (" +
                                   std::to_string(m.n_kv_heads) + ")");
  if (m.position.type == "rope" && m.head_dim % 2 != 0)
    r.fail("model.head_dim", "RoPE needs an even head_dim, got " + std::to_string(m.head_dim));
  if (m.max_seq_len > 0 && m.max_seq_len < d.seq_len)
    r.fail("model.max_seq_len", "is " + std::to_string(m.max_seq_len) + ", shorter than data.seq_len " +
                                    std::to_string(d.seq_len));
  if (!d.loss_window.empty()) {
    if (d.loss_window.size() != 2) r.fail("data.loss_window", "expected [min, max] or []");
    if (d.loss_window[0] > d.loss_window[1])
      r.fail("data.loss_window", "min " + std::to_string(d.loss_window[0]) + " is above max " +
                                     std::to_string(d.loss_window[1]));
    if (d.loss_window[1] > d.seq_len)
      r.fail("data.loss_window", "max " + std::to_string(d.loss_window[1]) + " is outside data.seq_len " +
                                     std::to_string(d.seq_len));
  }
  if (d.source == "shards" && d.train.empty()) r.fail("data.train", "data.source is shards but data.train is empty");
  if (d.synthetic.repeat_min > d.synthetic.repeat_max)
    r.fail("data.synthetic.repeat_min", "is above data.synthetic.repeat_max");
  if (d.source == "synthetic" && m.vocab < d.synthetic.vocab + 2)
    r.fail("model.vocab", "is " + std::to_string(m.vocab) + ", the synthetic language needs " +
                              std::to_string(d.synthetic.vocab + 2) + " (data.synthetic.vocab + BOS + marker)");
  if (d.source == "shards" && d.tokenizer == "byte" && m.vocab < 257)
    r.fail("model.vocab", "is " + std::to_string(m.vocab) + ", the byte tokenizer needs 257 (256 bytes + BOS)");
  if (t.micro_batch > 0 && t.batch % t.micro_batch != 0)
    r.fail("train.micro_batch", std::to_string(t.micro_batch) + " does not divide train.batch " + std::to_string(t.batch));
  // Token counters are int64 and pass through double in the records: keep them exact.
  if (t.tokens == 0 && static_cast<double>(t.steps) * t.batch * d.seq_len > 9007199254740992.0)
    r.fail("train.steps", std::to_string(t.steps) + " steps of " + std::to_string(t.batch * d.seq_len) +
                              " tokens are more than 2^53 tokens");
  if (const int64_t last = trainers::total_steps(t, d); t.hard_stop > last)
    r.fail("train.hard_stop", "step " + std::to_string(t.hard_stop) + " is after the last step " + std::to_string(last) +
                                  (t.tokens > 0 ? " (train.tokens over train.batch x data.seq_len, rounded up)" : ""));
  static const std::regex device_re("auto|cpu|cuda|cuda:[0-9]+");
  if (!std::regex_match(e.device, device_re)) r.fail("device", "expected auto, cpu, cuda or cuda:N, got '" + e.device + "'");
  int64_t max_len = m.max_seq_len > 0 ? m.max_seq_len : d.seq_len;
  for (int64_t id : e.probe.delimiters)
    if (id >= e.model.vocab)
      r.fail("probe.delimiters", "token id " + std::to_string(id) + " is outside the vocabulary (model.vocab " +
                                     std::to_string(e.model.vocab) + ")");
  if (e.probe.seq_len == 0) e.probe.seq_len = std::min<int64_t>(64, max_len);
  if (e.probe.seq_len > max_len)
    r.fail("probe.seq_len", std::to_string(e.probe.seq_len) + " is longer than the model's sequences (" +
                                std::to_string(max_len) + ")");
  // Automatic values for the typed structs (the printed YAML keeps the user's 0).
  m.max_seq_len = max_len;
  if (t.micro_batch == 0) t.micro_batch = t.batch;
}

struct Writer {
  YAML::Node root{YAML::NodeType::Map};
  void section(const std::string& path, const std::string&) { node_at(path, /*create=*/true); }
  template <class T>
  void field(const std::string& path, T& value, const std::string&, Range) {
    set(path, to_node(value));
  }
  void choice(const std::string& path, std::string& value, const std::string&, const std::vector<std::string>&) {
    set(path, to_node(value));
  }

  YAML::Node node_at(const std::string& path, bool) {
    YAML::Node cur = root;
    for (const auto& p : split_path(path)) {
      if (!cur[p]) cur[p] = YAML::Node(YAML::NodeType::Map);
      cur.reset(cur[p]);
    }
    return cur;
  }
  void set(const std::string& path, const YAML::Node& value) {
    auto parts = split_path(path);
    std::string parent = parts.size() > 1 ? path.substr(0, path.rfind('.')) : "";
    YAML::Node p = parent.empty() ? root : node_at(parent, true);
    p[parts.back()] = value;
  }
  static YAML::Node to_node(int64_t v) { return YAML::Node(std::to_string(v)); }
  static YAML::Node to_node(double v) { return YAML::Node(format_double(v)); }
  static YAML::Node to_node(bool v) { return YAML::Node(v ? "true" : "false"); }
  static YAML::Node to_node(const std::string& v) { return YAML::Node(v); }
  static YAML::Node to_node(const std::vector<int64_t>& v) {
    YAML::Node n(YAML::NodeType::Sequence);
    for (auto x : v) n.push_back(std::to_string(x));
    n.SetStyle(YAML::EmitterStyle::Flow);
    return n;
  }
};

Loaded finish(YAML::Node root, const Sources& sources, const std::string& source) {
  check_unknown_keys(root, "", sources, source);
  Experiment e;
  Reader reader(root, sources, source);
  walk_schema(reader, e);
  Loaded out;
  out.yaml = to_yaml(e);
  validate(e, reader);
  out.experiment = e;
  return out;
}

}  // namespace

namespace {

void check_plain_keys(const YAML::Node& node, const std::string& source, int depth) {
  // An alias inside the node it names (`a: &x {b: *x}`) is a cycle: every walk of it recurses
  // without end, so refuse deep nesting here, before anything else walks the tree.
  constexpr int kMaxDepth = 64;
  if ((node.IsSequence() || node.IsMap()) && depth > kMaxDepth)
    throw UserError(source + ":" + std::to_string(node.Mark().line + 1) + ": nested deeper than " +
                    std::to_string(kMaxDepth) + " levels (an alias that refers to itself?)");
  if (node.IsSequence()) {
    for (const auto& item : node) check_plain_keys(item, source, depth + 1);
    return;
  }
  if (!node.IsMap()) return;
  std::set<std::string> seen;
  for (const auto& kv : node) {
    const std::string where = source + ":" + std::to_string(kv.first.Mark().line + 1);
    if (!kv.first.IsScalar()) throw UserError(where + ": keys must be plain names, not a list or mapping");
    if (!seen.insert(kv.first.Scalar()).second)
      throw UserError(where + ": " + kv.first.Scalar() + ": key given twice in one mapping");
    check_plain_keys(kv.second, source, depth + 1);
  }
}

}  // namespace

void check_plain_keys(const YAML::Node& node, const std::string& source) { check_plain_keys(node, source, 0); }

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

Loaded load_text(const std::string& text, const std::string& source, const std::vector<std::string>& sets,
                 const std::string& base_dir) {
  Sources sources;
  std::vector<std::string> chain;
  YAML::Node root = load_layers(text, source, base_dir, sources, chain);
  for (const auto& s : sets) apply_set(root, s, sources);
  return finish(root, sources, source);
}

Loaded load_file(const std::string& path, const std::vector<std::string>& sets) {
  std::string text = read_file_text(path, "");
  std::string dir = fs::path(path).parent_path().string();
  return load_text(text, path, sets, dir.empty() ? "." : dir);
}

std::string to_yaml(const Experiment& e) {
  Writer w;
  Experiment copy = e;
  walk_schema(w, copy);
  YAML::Emitter out;
  out << w.root;
  return std::string(out.c_str()) + "\n";
}

trainers::TrainerSetup to_trainer_setup(const Loaded& loaded, const std::string& run_dir) {
  const auto& e = loaded.experiment;
  trainers::TrainerSetup setup;
  setup.model = e.model;
  setup.data = e.data;
  setup.train = e.train;
  setup.probe = e.probe;
  setup.seed = e.seed;
  setup.device = e.device;
  setup.run_dir = run_dir;
  setup.config_yaml = loaded.yaml;
  return setup;
}

std::vector<KeyDoc> schema_docs() { return schema_keys().docs; }

std::string schema_markdown() {
  std::string out = "| key | type | default | meaning |\n| --- | --- | --- | --- |\n";
  for (const auto& k : schema_docs()) {
    if (k.is_section) {
      out += "| **`" + k.path + "`** | section | | " + k.doc + " |\n";
    } else {
      out += "| `" + k.path + "` | " + k.type + " | `" + k.default_value + "` | " + k.doc + " |\n";
    }
  }
  return out;
}

std::vector<std::string> diff_keys(const Experiment& a, const Experiment& b) {
  YAML::Node ya = YAML::Load(to_yaml(a));
  YAML::Node yb = YAML::Load(to_yaml(b));
  std::vector<std::string> out;
  for (const auto& k : schema_docs()) {
    if (k.is_section) continue;
    YAML::Node na = ya, nb = yb;
    for (const auto& p : split_path(k.path)) {
      na.reset(na[p]);
      nb.reset(nb[p]);
    }
    YAML::Emitter ea, eb;
    ea << na;
    eb << nb;
    if (std::string(ea.c_str()) != std::string(eb.c_str())) out.push_back(k.path);
  }
  return out;
}

}  // namespace ablate::config
