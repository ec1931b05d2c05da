// safetensors (incl. Python interop), atomic directories and manifests, the metrics log.
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "data/core/errors.h"
#include "data/formats/atomic_dir.h"
#include "data/formats/metrics_log.h"
#include "data/formats/safetensors.h"
#include "tests/data/tmpdir.h"

using namespace ablate;
using namespace ablate::data;
namespace fs = std::filesystem;

namespace {

// One tensor per supported dtype, values that every dtype represents exactly.
NamedTensors sample_tensors() {
  NamedTensors t;
  const auto base = at::arange(24, at::kDouble).reshape({2, 3, 4}) - 10;
  for (auto [name, type] : std::vector<std::pair<std::string, at::ScalarType>>{
           {"f64", at::kDouble}, {"f32", at::kFloat}, {"f16", at::kHalf}, {"bf16", at::kBFloat16},
           {"i64", at::kLong}, {"i32", at::kInt}, {"i16", at::kShort}, {"i8", at::kChar}}) {
    t.emplace_back(name, base.to(type));
  }
  t.emplace_back("u8", (base + 10).to(at::kByte));
  t.emplace_back("bool", (base.remainder(3) == 0));
  t.emplace_back("scalar", at::tensor(3.5f).reshape({}));
  t.emplace_back("empty", at::zeros({0, 5}));
  t.emplace_back("strided", at::arange(12, at::kFloat).reshape({3, 4}).t());  // non-contiguous
  return t;
}

std::string python() {
  const std::string venv = std::string(ABLATE_SOURCE_DIR) + "/.venv/bin/python";
  return fs::exists(venv) ? venv : "";
}

}  // namespace

TEST_CASE("safetensors round trip, every dtype, metadata, order", "[safetensors]") {
  test::TempDir dir;
  const auto tensors = sample_tensors();
  save_safetensors(dir / "a.safetensors", tensors, {{"format", "pt"}, {"step", "12"}});
  const auto back = load_safetensors(dir / "a.safetensors");
  REQUIRE(back.tensors.size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    CHECK(back.tensors[i].first == tensors[i].first);
    CHECK(back.tensors[i].second.scalar_type() == tensors[i].second.scalar_type());
    CHECK(back.tensors[i].second.equal(tensors[i].second));
  }
  CHECK(back.metadata.at("step") == "12");
}

TEST_CASE("safetensors: malformed files are UserErrors naming the file", "[safetensors]") {
  test::TempDir dir;
  save_safetensors(dir / "ok.safetensors", {{"w", at::ones({4, 4})}});
  std::string bytes;
  {
    std::ifstream f(dir / "ok.safetensors", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto expect_error = [&](const std::string& content, const std::string& what) {
    { std::ofstream(dir / "bad.safetensors", std::ios::binary) << content; }
    try {
      load_safetensors(dir / "bad.safetensors");
      FAIL("no error for " << what);
    } catch (const UserError& e) {
      const std::string msg = e.what();
      CHECK(msg.find("bad.safetensors") != std::string::npos);
      CHECK(msg.find(what) != std::string::npos);
    }
  };
  expect_error(bytes.substr(0, bytes.size() - 8), "truncated");
  expect_error("abc", "too short");
  expect_error(std::string("\xff\xff\x00\x00\x00\x00\x00\x00", 8) + "{}", "exceeds the file");
  std::string bad_json = bytes;
  bad_json[9] = '[';
  expect_error(bad_json, "not JSON");
  CHECK_THROWS_AS(load_safetensors(dir / "absent.safetensors"), UserError);
}

TEST_CASE("safetensors interoperates with the Python safetensors library", "[safetensors][python]") {
  const std::string py = python();
  if (py.empty() || std::system((py + " -c 'import safetensors, torch' 2>/dev/null").c_str()) != 0) {
    WARN("python with safetensors and torch not found: interop test skipped");
    return;
  }
  test::TempDir dir;
  save_safetensors(dir / "cpp.safetensors", sample_tensors(), {{"written_by", "ablate"}});
  const std::string script = dir / "check.py";
  {
    std::ofstream f(script);
    f << R"(import sys, torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
d = sys.argv[1]
t = load_file(d + "/cpp.safetensors")
base = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4) - 10
want = {"f64": torch.float64, "f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16,
        "i64": torch.int64, "i32": torch.int32, "i16": torch.int16, "i8": torch.int8}
for k, dt in want.items():
    assert t[k].dtype == dt and torch.equal(t[k], base.to(dt)), k
assert torch.equal(t["u8"], (base + 10).to(torch.uint8))
assert torch.equal(t["bool"], base.remainder(3) == 0)
assert t["scalar"].shape == () and t["scalar"].item() == 3.5
assert t["empty"].shape == (0, 5)
assert torch.equal(t["strided"], torch.arange(12, dtype=torch.float32).reshape(3, 4).t())
with safe_open(d + "/cpp.safetensors", "pt") as f:
    assert f.metadata() == {"written_by": "ablate"}, f.metadata()
save_file({"b": torch.full((3,), 2.5, dtype=torch.bfloat16), "a": torch.arange(6).reshape(2, 3),
           "m": torch.tensor([True, False])}, d + "/py.safetensors", metadata={"from": "python"})
)";
  }
  REQUIRE(std::system((py + " " + script + " " + dir.path.string()).c_str()) == 0);
  const auto back = load_safetensors(dir / "py.safetensors");
  std::map<std::string, at::Tensor> m(back.tensors.begin(), back.tensors.end());
  REQUIRE(m.size() == 3);
  CHECK(m["b"].equal(at::full({3}, 2.5, at::kBFloat16)));
  CHECK(m["a"].equal(at::arange(6, at::kLong).reshape({2, 3})));
  CHECK(m["m"].equal(at::tensor({1, 0}).to(at::kBool)));
  CHECK(back.metadata.at("from") == "python");
}

TEST_CASE("atomic directory: commit, manifest, corruption detection", "[atomic]") {
  test::TempDir dir;
  const std::string final_dir = dir / "ckpt";
  {
    AtomicDir a(final_dir);
    std::ofstream(a.path("weights.bin"), std::ios::binary) << std::string(4096, 'w');
    std::ofstream(a.path("sub/state.json")) << "{\"step\": 3}";
    CHECK(!fs::exists(final_dir));
    a.commit();
  }
  REQUIRE(fs::exists(final_dir + "/manifest.json"));
  CHECK(verify_manifest(final_dir).empty());
  for (const auto& e : fs::directory_iterator(dir.path)) CHECK(e.path().string().find(".tmp-") == std::string::npos);

  fs::resize_file(final_dir + "/weights.bin", 100);
  CHECK(verify_manifest(final_dir).find("weights.bin: truncated (100 of 4096 bytes)") != std::string::npos);
  { std::ofstream(final_dir + "/weights.bin", std::ios::binary) << std::string(4096, 'x'); }
  CHECK(verify_manifest(final_dir).find("checksum mismatch") != std::string::npos);
  fs::remove(final_dir + "/sub/state.json");
  { std::ofstream(final_dir + "/weights.bin", std::ios::binary) << std::string(4096, 'w'); }
  CHECK(verify_manifest(final_dir).find("sub/state.json: missing") != std::string::npos);
  fs::remove(final_dir + "/manifest.json");
  CHECK(verify_manifest(final_dir).find("missing manifest.json") != std::string::npos);

  {  // uncommitted: nothing appears, the temporary is cleaned up
    AtomicDir a(dir / "never");
    std::ofstream(a.path("x")) << "x";
  }
  CHECK(!fs::exists(dir / "never"));
  {  // committing over an existing directory replaces it
    AtomicDir a(final_dir);
    std::ofstream(a.path("new.txt")) << "new";
    a.commit();
  }
  CHECK(fs::exists(final_dir + "/new.txt"));
  CHECK(!fs::exists(final_dir + "/weights.bin"));
  CHECK(verify_manifest(final_dir).empty());

  atomic_write_file(dir / "latest", "step_000100\n");
  std::ifstream f(dir / "latest");
  std::string s;
  std::getline(f, s);
  CHECK(s == "step_000100");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("metrics log: append, truncate_after, torn last line", "[metrics]") {
  test::TempDir dir;
  const std::string path = dir / "metrics.jsonl";
  {
    MetricsLog log(path);
    for (int step = 1; step <= 5; ++step) {
      log.write({{"step", step}, {"tokens", step * 100}, {"split", "train"}, {"loss", 1.0 / step}});
      if (step % 2 == 0) log.write({{"step", step}, {"split", "val"}, {"loss", 2.0}});
    }
    CHECK(read_metrics(path).size() == 7);
    log.truncate_after(3);
    log.write({{"step", 4}, {"split", "train"}, {"loss", 0.25}});
  }
  auto recs = read_metrics(path);
  REQUIRE(recs.size() == 5);
  CHECK(recs[3]["step"] == 3);
  CHECK(recs[4]["step"] == 4);
  CHECK(recs[4]["loss"] == 0.25);
  { std::ofstream(path, std::ios::app) << "{\"step\": 5, \"spl"; }  // a crash mid-write
  CHECK(read_metrics(path).size() == 5);
  truncate_metrics_after(path, 100);
  {
    MetricsLog log(path);
    log.write({{"step", 5}});
  }
  recs = read_metrics(path);
  REQUIRE(recs.size() == 6);
  CHECK(recs.back()["step"] == 5);
  { std::ofstream(path, std::ios::app) << "garbage\n{\"step\": 6}\n"; }
  CHECK_THROWS_AS(read_metrics(path), UserError);
  // A damaged record before the end is refused on resume, and the file stays as it was.
  const std::string before = test::read_text(path);
  CHECK_THROWS_WITH(truncate_metrics_after(path, 2), Catch::Contains("metrics.jsonl:7:"));
  CHECK(test::read_text(path) == before);
  // A record whose step is not a step number is refused by every reader, resume included.
  { std::ofstream(path, std::ios::trunc) << "{\"step\": \"1\", \"split\": \"train\"}\n{\"step\": 2}\n"; }
  CHECK_THROWS_WITH(read_metrics(path), Catch::Contains("metrics.jsonl:1: step: expected a non-negative integer"));
  CHECK_THROWS_WITH(truncate_metrics_after(path, 1), Catch::Contains("metrics.jsonl:1: step"));
  // A complete last line that is JSON but no record is an error too, not a torn write.
  { std::ofstream(path, std::ios::trunc) << "{\"step\": 1}\n[2]\n"; }
  CHECK_THROWS_WITH(truncate_metrics_after(path, 1), Catch::Contains("metrics.jsonl:2: not a JSON object"));
}
