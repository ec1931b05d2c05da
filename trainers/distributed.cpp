// c10d data parallelism (distributed.h). The only translation unit that includes c10d's
// ProcessGroupGloo.hpp, which needs Gloo's headers: the wheel ships none, so they come from
// Debian's libgloo-dev, unpacked by scripts/setup.sh and used for this file only. Debian's Gloo
// is older than the one compiled into libtorch_cpu, so this file must never construct, subclass
// or call anything of `gloo::` itself: it only holds gloo::transport::Device through
// shared_ptr, and calls ProcessGroupGloo's exported functions (docs/distributed.md, risks).
#include "trainers/distributed.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#if ABLATE_WITH_CUDA
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "data/core/errors.h"
#include "data/formats/atomic_dir.h"

namespace ablate::trainers {

// The layouts this file's (Debian) Gloo headers give must be the ones libtorch_cpu was built
// with, since the library allocates these objects (checked with objdump on torch 2.11.0:
// ProcessGroupGloo 0x1e8 bytes, its Options 0xb0). A torch upgrade that changes them fails here.
static_assert(sizeof(c10d::ProcessGroupGloo) == 0x1e8, "ProcessGroupGloo layout differs from torch 2.11.0's");
static_assert(sizeof(c10d::ProcessGroupGloo::Options) == 0xb0, "ProcessGroupGloo::Options layout differs");

namespace {

int env_int(const char* name, int fallback, int min, int max) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || x < min || x > max)
    throw UserError(std::string("environment variable ") + name + "='" + v + "': expected an integer in [" +
                    std::to_string(min) + ", " + std::to_string(max) + "]");
  return static_cast<int>(x);
}

std::string first_line(std::string text) {
  if (const size_t nl = text.find('\n'); nl != std::string::npos) text.resize(nl);
  return text;
}

// c10d reports failures as c10::Error subclasses (DistBackendError, DistNetworkError, ...).
template <class F>
auto guarded(int rank, const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::Error& e) {
    throw DistributedError(failure_message(rank, what, e.what_without_backtrace()));
  } catch (const UserError&) {
    throw;
  } catch (const std::exception& e) {  // Gloo's own exceptions
    throw DistributedError(failure_message(rank, what, e.what()));
  }
}

}  // namespace

std::string failure_message(int rank, const std::string& what, std::string detail) {
  return "rank " + std::to_string(rank) + ": " + what +
         " failed (another rank died, or did not answer within train.dist.timeout): " + first_line(std::move(detail));
}

DistEnv dist_env_from_environment() {
  DistEnv e;
  e.world = env_int("WORLD_SIZE", 1, 1, 1 << 20);
  const char* ws = std::getenv("WORLD_SIZE");
  e.launched = ws != nullptr && *ws != '\0';
  e.rank = env_int("RANK", 0, 0, e.world - 1);
  e.local_rank = env_int("LOCAL_RANK", e.rank, 0, 1 << 20);
  e.master_port = env_int("MASTER_PORT", 29500, 1, 65535);
  if (const char* a = std::getenv("MASTER_ADDR"); a != nullptr && *a != '\0') e.master_addr = a;
  if (e.world > 1 && std::getenv("RANK") == nullptr)
    throw UserError("environment variable RANK: missing (WORLD_SIZE is " + std::to_string(e.world) + ")");
  return e;
}

struct DataParallel::Impl {
  DistEnv env;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  std::unique_ptr<c10d::Reducer> reducer;
};

DataParallel::DataParallel(const DistEnv& env, const at::Device& device, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()) {
  impl_->env = env;
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  guarded(env.rank, "rendezvous", [&] {
   try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = env.world;
    so.waitWorkers = true;
    so.timeout = timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
   } catch (const c10::Error& e) {
    // Rank 0 cannot listen (port taken by another job) or nobody can resolve the address: the
    // environment's fault, not a peer's.
    const std::string msg = first_line(e.what_without_backtrace());
    if (msg.find("EADDRINUSE") != std::string::npos || msg.find("failed to listen") != std::string::npos ||
        msg.find("getaddrinfo") != std::string::npos || msg.find("resolve") != std::string::npos)
      throw UserError("MASTER_ADDR:MASTER_PORT '" + where + "': " + msg);
    throw;
   }
    return 0;
  });
  impl_->group = c10::make_intrusive<c10d::ProcessGroup>(impl_->store, env.rank, env.world);
  if (device.is_cuda()) {
#if ABLATE_WITH_CUDA
    guarded(env.rank, "NCCL set-up", [&] {
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          c10::make_intrusive<c10d::PrefixStore>("nccl", impl_->store), env.rank, env.world, o);
      impl_->group->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
      impl_->group->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
      return 0;
    });
#else
    throw UserError("device: CUDA data parallelism needs a build with CUDA (NCCL)");
#endif
  }
  // Gloo always: the CPU-side agreement (any, allgather of digests) runs on it.
  guarded(env.rank, "Gloo set-up", [&] {
    auto o = c10d::ProcessGroupGloo::Options::create(timeout);
    // One machine: loopback. Several: GLOO_SOCKET_IFNAME names the interface, else the address
    // this host's name resolves to (c10d's default device).
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname != nullptr && *ifname != '\0')
      o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost")
      o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    o->threads = 2;
    auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo", impl_->store), env.rank, env.world, o);
    impl_->group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
    if (!device.is_cuda()) impl_->group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    return 0;
  });
}

DataParallel::~DataParallel() {
  try {
    impl_->reducer.reset();  // may throw (noexcept(false)) after a failed collective
  } catch (...) {
  }
}

int DataParallel::rank() const { return impl_->env.rank; }
int DataParallel::world() const { return impl_->env.world; }

void DataParallel::attach(const std::vector<at::Tensor>& params) {
  const size_t n = params.size();
  const int64_t cap = int64_t{25} << 20, first_cap = int64_t{1} << 20;
  auto [buckets, limits] = c10d::compute_bucket_assignment_by_size(
      params, {static_cast<size_t>(first_cap), static_cast<size_t>(cap)}, std::vector<bool>(n, false));
  (void)limits;
  impl_->reducer = std::make_unique<c10d::Reducer>(params, std::move(buckets), impl_->group, std::vector<bool>(n, false),
                                                   cap, /*find_unused_parameters=*/false,
                                                   /*gradient_as_bucket_view=*/false, std::unordered_map<size_t, std::string>{},
                                                   first_cap, /*skip_all_reduce_unused_params=*/false,
                                                   /*use_python_reducer=*/false, std::vector<int64_t>{});
}

void DataParallel::before_forward(bool sync) {
  if (!sync || !impl_->reducer) return;
  guarded(rank(), "bucket rebuild", [&] { return impl_->reducer->rebuild_buckets(); });
  impl_->reducer->prepare_for_forward();
}

void DataParallel::before_backward(const at::Tensor& loss, bool sync) {
  // Without prepare_for_backward the Reducer's autograd hooks return at once: the gradients of
  // this micro-batch accumulate locally (DDP's no_sync).
  if (sync && impl_->reducer) impl_->reducer->prepare_for_backward({loss});
}

void DataParallel::mean_(at::Tensor& t) {
  guarded(rank(), "all-reduce", [&] {
    std::vector<at::Tensor> v{t};
    impl_->group->allreduce(v)->wait();
    return 0;
  });
  t.div_(world());
}

bool DataParallel::any(bool flag) {
  at::Tensor t = at::full({1}, flag ? 1 : 0, at::kInt);
  guarded(rank(), "all-reduce", [&] {
    std::vector<at::Tensor> v{t};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::MAX;
    impl_->group->getBackend(c10::DeviceType::CPU)->allreduce(v, o)->wait();
    return 0;
  });
  return t.item<int>() != 0;
}

std::vector<at::Tensor> DataParallel::allgather(const at::Tensor& t) {
  const at::Tensor in = t.contiguous().cpu();
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < world(); ++r) out[0].push_back(at::empty_like(in));
  guarded(rank(), "all-gather", [&] {
    std::vector<at::Tensor> v{in};
    impl_->group->getBackend(c10::DeviceType::CPU)->allgather(out, v)->wait();
    return 0;
  });
  return out[0];
}

void DataParallel::check_same(const std::string& what, const std::string& digest) {
  at::Tensor mine = at::zeros({64}, at::kByte);
  std::memcpy(mine.data_ptr(), digest.data(), std::min<size_t>(64, digest.size()));
  const auto all = allgather(mine);
  std::string differ;
  for (int r = 1; r < world(); ++r)
    if (!at::equal(all[static_cast<size_t>(r)], all[0])) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  if (!differ.empty()) throw DistributedError(what + ": rank(s) " + differ + " differ from rank 0");
}

void DataParallel::barrier() {
  guarded(rank(), "barrier", [&] {
    impl_->group->getBackend(c10::DeviceType::CPU)->barrier()->wait();
    return 0;
  });
}

std::string tensors_digest(const std::vector<at::Tensor>& tensors) {
  std::string bytes;
  for (const auto& t : tensors) {
    const at::Tensor c = t.detach().contiguous().cpu();
    bytes.append(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.nbytes()));
  }
  return data::sha256_hex(bytes);
}

}  // namespace ablate::trainers
