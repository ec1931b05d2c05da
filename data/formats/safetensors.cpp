// safetensors reader and writer (safetensors.h). Header JSON keys are written in sorted order
// (nlohmann's default); tensor bytes follow in the caller's order, so data offsets keep it.
#include "data/formats/safetensors.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>
#include <unistd.h>

#include "data/core/errors.h"
#include "data/core/log.h"

namespace ablate::data {
namespace {

struct DtypeName {
  at::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {
    {at::kDouble, "F64"}, {at::kFloat, "F32"}, {at::kHalf, "F16"}, {at::kBFloat16, "BF16"}, {at::kLong, "I64"},
    {at::kInt, "I32"},    {at::kShort, "I16"}, {at::kChar, "I8"},  {at::kByte, "U8"},      {at::kBool, "BOOL"},
};

const char* dtype_name(at::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  return nullptr;
}

bool dtype_from_name(const std::string& n, at::ScalarType& out) {
  for (const auto& d : kDtypes)
    if (n == d.name) return out = d.type, true;
  return false;
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> cpu;
  cpu.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__" || header.contains(name))
      throw std::invalid_argument(log::str(path, ": duplicate or reserved tensor name '", name, "'"));
    const char* dt = dtype_name(t.scalar_type());
    if (!dt) throw std::invalid_argument(log::str(path, ": tensor '", name, "': unsupported dtype ", t.scalar_type()));
    cpu.push_back(t.detach().to(at::kCPU).contiguous());
    const auto bytes = static_cast<uint64_t>(cpu.back().nbytes());
    header[name] = {{"dtype", dt}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // the Python writer aligns the data to 8 bytes
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw UserError(log::str(path, ": cannot write"));
  const uint64_t n = h.size();
  unsigned char le[8];
  for (int i = 0; i < 8; ++i) le[i] = static_cast<unsigned char>(n >> (8 * i));
  f.write(reinterpret_cast<const char*>(le), 8);
  f.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (const auto& t : cpu) f.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  f.flush();
  if (!f) throw UserError(log::str(path, ": write failed"));
}

SafetensorsFile load_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw UserError(log::str(path, ": cannot open safetensors file"));
  const auto file_bytes = static_cast<uint64_t>(f.tellg());
  f.seekg(0);
  auto bad = [&](const std::string& what) { return UserError(log::str(path, ": malformed safetensors: ", what)); };
  if (file_bytes < 8) throw bad(log::str("file has ", file_bytes, " bytes, too short for the 8-byte header length"));
  unsigned char le[8];
  f.read(reinterpret_cast<char*>(le), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(le[i]) << (8 * i);
  if (n > file_bytes - 8) throw bad(log::str("header length ", n, " exceeds the file (", file_bytes, " bytes)"));
  std::string h(n, '\0');
  f.read(h.data(), static_cast<std::streamsize>(n));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(h);
  } catch (const nlohmann::json::exception& e) {
    throw bad(log::str("header is not JSON: ", e.what()));
  }
  if (!header.is_object()) throw bad("header is not a JSON object");
  const uint64_t data_bytes = file_bytes - 8 - n;

  SafetensorsFile out;
  struct Entry {
    uint64_t begin, end;
    std::string name;
    at::ScalarType type;
    std::vector<int64_t> shape;
  };
  std::vector<Entry> entries;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) throw bad("__metadata__ is not an object");
      for (const auto& [k, s] : v.items()) {
        if (!s.is_string()) throw bad(log::str("__metadata__.", k, " is not a string"));
        out.metadata[k] = s.get<std::string>();
      }
      continue;
    }
    Entry e;
    e.name = name;
    try {
      if (!dtype_from_name(v.at("dtype").get<std::string>(), e.type))
        throw bad(log::str("tensor '", name, "': unsupported dtype ", v.at("dtype").dump()));
      e.shape = v.at("shape").get<std::vector<int64_t>>();
      const auto off = v.at("data_offsets").get<std::vector<uint64_t>>();
      if (off.size() != 2) throw bad(log::str("tensor '", name, "': data_offsets needs 2 values"));
      e.begin = off[0];
      e.end = off[1];
    } catch (const nlohmann::json::exception& ex) {
      throw bad(log::str("tensor '", name, "': ", ex.what()));
    }
    uint64_t want = at::elementSize(e.type);  // bytes: the element size times every dimension
    for (auto d : e.shape) {
      if (d < 0) throw bad(log::str("tensor '", name, "': negative dimension"));
      if (__builtin_mul_overflow(want, static_cast<uint64_t>(d), &want))
        throw bad(log::str("tensor '", name, "': shape ", nlohmann::json(e.shape).dump(), " has too many elements"));
    }
    if (e.end < e.begin || e.end - e.begin != want)
      throw bad(log::str("tensor '", name, "': data_offsets [", e.begin, ", ", e.end, ") hold ", e.end - e.begin,
                         " bytes, shape and dtype need ", want));
    if (e.end > data_bytes)
      throw bad(log::str("tensor '", name, "': data ends at byte ", e.end, " but the file holds ", data_bytes,
                         " data bytes (truncated?)"));
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expect = 0;
  for (const auto& e : entries) {
    if (e.begin != expect) throw bad(log::str("tensor '", e.name, "': data overlaps or leaves a gap at byte ", expect));
    expect = e.end;
  }
  if (expect != data_bytes)
    throw bad(log::str("tensors cover ", expect, " data bytes but the file holds ", data_bytes));
  for (const auto& e : entries) {
    auto t = at::empty(e.shape, at::TensorOptions().dtype(e.type));
    f.seekg(static_cast<std::streamoff>(8 + n + e.begin));
    f.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e.end - e.begin));
    if (!f) throw bad(log::str("tensor '", e.name, "': read failed"));
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

}  // namespace ablate::data
