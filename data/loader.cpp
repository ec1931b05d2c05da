// The training loader: sample order, rank slicing, validation and probe data (loader.h;
// docs/data.md describes the order exactly).
#include "data/loader.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <filesystem>

#include "data/core/errors.h"
#include "data/core/log.h"
#include "data/shards.h"
#include "data/synthetic.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;

namespace ablate::data {
namespace {

// A keyed bijection of [0, n): a 4-round Feistel network on the smallest even number of bits
// that covers n, cycle-walking until the value falls inside [0, n). O(1) memory, so the
// shuffled order of an epoch is a pure function of (key, position).
uint64_t permute(uint64_t k, uint64_t n, uint64_t key) {
  if (n <= 1) return 0;
  int bits = 2;
  while ((uint64_t{1} << bits) < n) bits += 2;
  const int half = bits / 2;
  const uint64_t mask = (uint64_t{1} << half) - 1;
  do {
    uint64_t l = k >> half, r = k & mask;
    for (uint64_t round = 0; round < 4; ++round) {
      const uint64_t f = hash_combine(hash_combine(key, round), r) & mask;
      const uint64_t nl = r;
      r = l ^ f;
      l = nl;
    }
    k = (l << half) | r;
  } while (k >= n);
  return k;
}

// The windows of a list of shards. BOS mode: a window is BOS + the seq_len tokens from `start`,
// where starts are each document's first content token and every seq_len tokens after it
// inside the document (tokens before a shard's first BOS count as a document too). Crop mode:
// window k of shard s is the seq_len + 1 tokens from offset + k * (seq_len + 1).
struct Windows {
  bool bos = true;
  int64_t len = 0;  // seq_len + 1
  std::vector<int32_t> shard;  // BOS mode
  std::vector<int64_t> start;  // BOS mode
  std::vector<int64_t> cum;    // crop mode: cum[s] = windows in shards < s; cum.back() = total
  int64_t count() const { return bos ? static_cast<int64_t>(start.size()) : cum.back(); }

  // (shard, first token): BOS mode ignores offset.
  std::pair<int64_t, int64_t> at(int64_t k, int64_t offset) const {
    if (bos) return {shard[static_cast<size_t>(k)], start[static_cast<size_t>(k)]};
    const auto s = std::upper_bound(cum.begin(), cum.end(), k) - cum.begin() - 1;
    return {s, offset + (k - cum[static_cast<size_t>(s)]) * len};
  }
};

Windows build_windows(const std::vector<Shard>& shards, bool bos, int32_t bos_id, int64_t seq_len,
                      int64_t max_offset, int64_t* bos_count) {
  Windows w;
  w.bos = bos;
  w.len = seq_len + 1;
  if (!bos) {
    w.cum.push_back(0);
    for (const auto& sh : shards) w.cum.push_back(w.cum.back() + std::max<int64_t>(0, (sh.size() - max_offset) / w.len));
    return w;
  }
  for (size_t s = 0; s < shards.size(); ++s) {
    const Shard& sh = shards[s];
    const int64_t n = sh.size();
    int64_t doc_begin = 0;  // first content token of the current document
    auto emit = [&](int64_t end) {  // the document's content is [doc_begin, end)
      for (int64_t c = doc_begin; c < end && c + seq_len <= n; c += seq_len) {
        w.shard.push_back(static_cast<int32_t>(s));
        w.start.push_back(c);
      }
    };
    for (int64_t i = 0; i < n; ++i) {
      if (sh[i] == bos_id) {
        ++*bos_count;
        emit(i);
        doc_begin = i + 1;
      }
    }
    emit(n);
  }
  return w;
}

std::string short_hex(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace

struct Loader::Impl {
  DataOptions opt;
  int64_t micro_batch = 1;
  int rank = 0;
  int world = 1;
  int64_t T = 0;  // seq_len
  int64_t L = 0;  // seq_len + 1
  int64_t position = 0;
  int32_t bos = 0;
  int64_t vocab = 0;
  std::vector<int64_t> delimiters;
  std::string fingerprint;
  std::vector<float> mask;  // (T)

  std::unique_ptr<SyntheticLanguage> lang;  // synthetic
  std::vector<Shard> train, val;            // shards
  Windows train_w, val_w;

  bool synthetic() const { return lang != nullptr; }

  int64_t per_epoch() const { return synthetic() ? INT64_MAX : train_w.count(); }

  // Global training sample g: L tokens.
  void train_sample(int64_t g, int32_t* out) const {
    if (synthetic()) return synthetic_sample(kTrainStream, g, L, out);
    const int64_t n = train_w.count();
    const int64_t epoch = g / n, k = g % n;
    const uint64_t key = hash_combine(static_cast<uint64_t>(opt.seed), static_cast<uint64_t>(epoch));
    const auto id = static_cast<int64_t>(permute(static_cast<uint64_t>(k), static_cast<uint64_t>(n), key));
    const int64_t offset = opt.bos ? 0 : static_cast<int64_t>(mix64(key) % static_cast<uint64_t>(L));
    window(train, train_w, id, offset, out);
  }

  void val_sample(int64_t i, int32_t* out) const {
    if (synthetic()) return synthetic_sample(kValStream, i, L, out);
    window(val, val_w, i, /*offset=*/0, out);
  }

  // bos=false drops the BOS: the sequence is a crop of a longer one.
  void synthetic_sample(int64_t stream, int64_t index, int64_t len, int32_t* out) const {
    if (opt.bos) return lang->sequence(stream, index, len, out);
    std::vector<int32_t> tmp(static_cast<size_t>(len + 1));
    lang->sequence(stream, index, len + 1, tmp.data());
    std::copy(tmp.begin() + 1, tmp.end(), out);
  }

  void window(const std::vector<Shard>& shards, const Windows& w, int64_t k, int64_t offset, int32_t* out) const {
    const auto [s, start] = w.at(k, offset);
    if (w.bos) {
      out[0] = bos;
      shards[static_cast<size_t>(s)].read(start, T, out + 1);
    } else {
      shards[static_cast<size_t>(s)].read(start, L, out);
    }
  }

  Batch make_batch(const std::vector<int32_t>& rows, int64_t b) const {
    auto all = at::from_blob(const_cast<int32_t*>(rows.data()), {b, L}, at::kInt).to(at::kLong);  // (B, T+1)
    Batch batch;
    batch.inputs = all.slice(1, 0, T).contiguous();   // (B, T)
    batch.targets = all.slice(1, 1, L).contiguous();  // (B, T)
    batch.loss_mask = at::from_blob(const_cast<float*>(mask.data()), {1, T}, at::kFloat).expand({b, T}).clone();
    return batch;
  }

  void open_shards() {
    auto tok = load_tokenizer(opt.tokenizer);
    bos = tok->bos_id();
    vocab = tok->vocab_size();
    for (int32_t id : tok->delimiter_ids()) delimiters.push_back(id);
    const auto train_paths = expand_shard_spec(opt.train, "data.train");
    int64_t max_id = -1, train_tokens = 0;
    uint64_t files_hash = 0;
    auto open_all = [&](const std::vector<std::string>& paths, std::vector<Shard>& out) {
      for (const auto& p : paths) {
        out.emplace_back(p);
        const Shard& sh = out.back();
        for (int64_t i = 0; i < sh.size(); ++i) max_id = std::max(max_id, sh[i]);
        check_max_id(sh, max_id);
        files_hash = hash_combine(files_hash, static_cast<uint64_t>(sh.size()));
      }
    };
    open_all(train_paths, train);
    for (const auto& sh : train) train_tokens += sh.size();
    if (train_tokens == 0) throw UserError(log::str("data.train: '", opt.train, "': shards hold no tokens (empty corpus)"));
    std::string val_spec = opt.val;
    if (val_spec.empty()) {
      const fs::path first(train_paths.front());
      const fs::path dir = fs::is_directory(opt.train) ? fs::path(opt.train) : first.parent_path();
      val_spec = (dir / "*val*.bin").string();
    }
    std::vector<std::string> val_paths;
    try {
      val_paths = expand_shard_spec(val_spec, "data.val");
    } catch (const UserError&) {
      throw UserError(log::str("data.val: no validation shards at '", val_spec,
                               "' (ablate data prepare writes val_000000.bin beside the train shards)"));
    }
    open_all(val_paths, val);
    if (max_id >= vocab)
      log::warn(log::str("shards contain token id ", max_id, " >= vocabulary ", vocab, " of tokenizer '", opt.tokenizer,
                         "'; the model vocabulary will cover it"));
    vocab = std::max(vocab, max_id + 1);
    int64_t train_docs = 0, val_docs = 0;
    train_w = build_windows(train, opt.bos, bos, T, /*max_offset=*/L - 1, &train_docs);
    val_w = build_windows(val, opt.bos, bos, T, /*max_offset=*/0, &val_docs);
    if (opt.bos && train_docs == 0)
      throw UserError(log::str("data.train: '", opt.train, "': no BOS token (id ", bos, ") in ", train_tokens,
                               " tokens; data.bos is true: is data.tokenizer the one that wrote these shards? "
                               "(data.bos: false takes random crops)"));
    const std::string hint = opt.bos ? " (data.bos is true: is data.tokenizer the one that wrote these shards?)" : "";
    if (train_w.count() == 0)
      throw UserError(log::str("data.train: '", opt.train, "': ", train_tokens, " tokens hold no sample of ", L,
                               " tokens", hint));
    if (val_w.count() == 0)
      throw UserError(log::str("data.val: '", val_spec, "': no validation sample of ", L, " tokens", hint));
    log::info(log::str("data: ", train.size(), " train shard(s), ", train_tokens, " tokens, ", train_w.count(),
                       " samples per epoch; ", val.size(), " val shard(s), ", val_w.count(), " val samples"));
    fingerprint = log::str("shards;seed=", opt.seed, ";seq_len=", T, ";bos=", opt.bos, ";samples=", train_w.count(),
                           ";tokens=", train_tokens, ";files=", short_hex(files_hash));
  }
};

Loader::Loader(const DataOptions& options, int64_t micro_batch, int rank, int world) : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.opt = options;
  m.micro_batch = micro_batch;
  m.rank = rank;
  m.world = world;
  if (micro_batch < 1) throw UserError(log::str("micro-batch must be >= 1, got ", micro_batch));
  if (world < 1 || rank < 0 || rank >= world) throw std::invalid_argument(log::str("bad rank ", rank, " of ", world));
  if (options.seq_len < 1) throw UserError(log::str("data.seq_len: must be >= 1, got ", options.seq_len));
  m.T = options.seq_len;
  m.L = m.T + 1;
  int64_t lo = 1, hi = m.T;
  if (!options.loss_window.empty()) {
    if (options.loss_window.size() != 2)
      throw UserError(log::str("data.loss_window: expected [min, max], got ", options.loss_window.size(), " values"));
    lo = options.loss_window[0];
    hi = options.loss_window[1];
    if (lo < 1 || hi < lo || hi > m.T)
      throw UserError(log::str("data.loss_window: [", lo, ", ", hi, "] must satisfy 1 <= min <= max <= data.seq_len (",
                               m.T, ")"));
  }
  m.mask.assign(static_cast<size_t>(m.T), 0.f);
  for (int64_t t = lo; t <= hi; ++t) m.mask[static_cast<size_t>(t - 1)] = 1.f;

  if (options.source == "synthetic") {
    m.lang = std::make_unique<SyntheticLanguage>(options.synthetic, options.seed);
    m.bos = m.lang->bos_id();
    m.vocab = m.lang->vocab_size();
    const auto& s = options.synthetic;
    m.fingerprint = log::str("synthetic;seed=", options.seed, ";seq_len=", m.T, ";bos=", options.bos, ";vocab=", s.vocab,
                             ";zipf=", s.zipf_exponent, ";repeat=", s.repeat_prob, ",", s.repeat_min, ",", s.repeat_max);
  } else if (options.source == "shards") {
    m.open_shards();
  } else {
    throw UserError(log::str("data.source: '", options.source, "' is not one of synthetic, shards"));
  }
}

Loader::~Loader() = default;
Loader::Loader(Loader&&) noexcept = default;
Loader& Loader::operator=(Loader&&) noexcept = default;

Batch Loader::next() {
  auto& m = *impl_;
  std::vector<int32_t> rows(static_cast<size_t>(m.micro_batch * m.L));
  const int64_t first = m.position + m.rank * m.micro_batch;
  for (int64_t j = 0; j < m.micro_batch; ++j) m.train_sample(first + j, rows.data() + j * m.L);
  m.position += m.micro_batch * m.world;
  return m.make_batch(rows, m.micro_batch);
}

LoaderState Loader::state() const { return {impl_->position, impl_->fingerprint}; }

void Loader::restore(const LoaderState& s) {
  if (s.fingerprint != impl_->fingerprint)
    throw UserError(log::str("data changed since the checkpoint: loader was '", s.fingerprint, "', now '",
                             impl_->fingerprint, "'"));
  if (s.position < 0) throw UserError(log::str("loader state: negative position ", s.position));
  impl_->position = s.position;
}

int64_t Loader::vocab_needed() const { return impl_->vocab; }
int32_t Loader::bos_id() const { return impl_->bos; }
std::vector<int64_t> Loader::delimiter_ids() const { return impl_->delimiters; }
int64_t Loader::samples_per_epoch() const { return impl_->per_epoch(); }
const DataOptions& Loader::options() const { return impl_->opt; }

std::string Loader::order_hash(int64_t n) const {
  const auto& m = *impl_;
  std::vector<int32_t> row(static_cast<size_t>(m.L));
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over the tokens' little-endian bytes
  for (int64_t g = 0; g < n; ++g) {
    m.train_sample(g, row.data());
    for (int32_t t : row)
      for (int b = 0; b < 4; ++b) h = (h ^ ((static_cast<uint32_t>(t) >> (8 * b)) & 0xff)) * 0x100000001b3ull;
  }
  return short_hex(h);
}

int64_t Loader::validation_size() const {
  return impl_->synthetic() ? impl_->opt.synthetic.val_sequences : impl_->val_w.count();
}

Batch Loader::validation_batch(int64_t i, int64_t batch_size) const {
  const auto& m = *impl_;
  const int64_t size = validation_size();
  if (batch_size < 1 || i < 0 || i * batch_size >= size)
    throw std::out_of_range(log::str("validation batch ", i, " of size ", batch_size, " outside ", size, " sequences"));
  const int64_t b = std::min(batch_size, size - i * batch_size);
  std::vector<int32_t> rows(static_cast<size_t>(b * m.L));
  for (int64_t j = 0; j < b; ++j) m.val_sample(i * batch_size + j, rows.data() + j * m.L);
  return m.make_batch(rows, b);
}

at::Tensor Loader::probe_sequences(int64_t n, int64_t seq_len, int64_t seed) const {
  const auto& m = *impl_;
  std::vector<int32_t> rows(static_cast<size_t>(n * seq_len));
  const uint64_t key = hash_combine(0x70726f6265ull, static_cast<uint64_t>(seed));  // "probe"
  for (int64_t i = 0; i < n; ++i) {
    int32_t* out = rows.data() + i * seq_len;
    if (m.synthetic()) {
      m.synthetic_sample(kProbeStream, static_cast<int64_t>(hash_combine(key, static_cast<uint64_t>(i)) >> 1), seq_len, out);
      continue;
    }
    const auto count = static_cast<uint64_t>(m.val_w.count());
    bool done = false;
    for (uint64_t attempt = 0; attempt < 64 && !done; ++attempt) {
      const uint64_t k = attempt == 0 ? permute(static_cast<uint64_t>(i) % count, count, key)
                                      : hash_combine(key, static_cast<uint64_t>(i) * 64 + attempt) % count;
      const auto [s, start] = m.val_w.at(static_cast<int64_t>(k), 0);
      const Shard& sh = m.val[static_cast<size_t>(s)];
      const int64_t need = m.opt.bos ? seq_len - 1 : seq_len;
      if (start + need > sh.size()) continue;
      if (m.opt.bos) {
        out[0] = m.bos;
        sh.read(start, need, out + 1);
      } else {
        sh.read(start, need, out);
      }
      done = true;
    }
    if (!done)
      throw UserError(log::str("validation shards too short for probe sequences of ", seq_len, " tokens"));
  }
  return at::from_blob(rows.data(), {n, seq_len}, at::kInt).to(at::kLong);  // (N, T)
}

// --- LoaderState -----------------------------------------------------------------------------

nlohmann::json LoaderState::to_json() const { return {{"position", position}, {"fingerprint", fingerprint}}; }

LoaderState LoaderState::from_json(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("position") || !j["position"].is_number_integer() || !j.contains("fingerprint") ||
      !j["fingerprint"].is_string())
    throw UserError(log::str("loader state: expected {\"position\": int, \"fingerprint\": str}, got ", j.dump()));
  return {j["position"].get<int64_t>(), j["fingerprint"].get<std::string>()};
}

std::string LoaderState::to_string() const { return to_json().dump(); }

LoaderState LoaderState::from_string(const std::string& s) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(s);
  } catch (const nlohmann::json::exception& e) {
    throw UserError(log::str("loader state: not JSON: ", e.what()));
  }
  return from_json(j);
}

}  // namespace ablate::data
