// Data parallelism on PyTorch's own distributed engine, c10d (docs/distributed.md): a TCPStore
// rendezvous, ProcessGroupGloo on CPU or ProcessGroupNCCL on CUDA, and c10d::Reducer, which
// averages gradients in buckets while the backward pass runs (what DistributedDataParallel
// uses). No c10d or Gloo header leaks out of distributed.cpp.
//
// Invariants:
// * Every rank makes the same sequence of collective calls: the trainer's decisions that lead
//   to one (stop, checkpoint, check) are functions of the step or are agreed by `any`.
// * After `sync_gradients`' backward, every rank holds the mean of the ranks' gradients, so
//   identical optimiser steps keep the parameters identical (checked by `check_same`).
// * A collective that cannot finish (a rank died, or hangs past the timeout) throws
//   `DistributedError`; nothing waits forever.
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace ablate::trainers {

// The torchrun contract: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.
struct DistEnv {
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool launched = false;  // WORLD_SIZE was set: join a group, even of one (world size 1 on one GPU)
  bool active() const { return launched || world > 1; }
};

// Reads the variables; without WORLD_SIZE (or with 1) the run is a single process. UserError
// naming the variable for a malformed or inconsistent value.
DistEnv dist_env_from_environment();

struct DistributedError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "rank R: WHAT failed (another rank died, or ...): DETAIL's first line".
std::string failure_message(int rank, const std::string& what, std::string detail);

class DataParallel {
 public:
  // Joins the group (rank 0 hosts the store). `timeout` bounds the rendezvous and every
  // collective. CPU devices use Gloo, CUDA devices NCCL.
  DataParallel(const DistEnv& env, const at::Device& device, std::chrono::milliseconds timeout);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const;
  int world() const;

  // Gradient averaging for these parameters (on the device, in a fixed order, all used in every
  // step). Call once before training.
  void attach(const std::vector<at::Tensor>& params);
  // Before the forward pass of each micro-batch. `sync` = the last micro-batch of the step: its
  // backward averages the accumulated gradients across ranks; earlier ones accumulate locally.
  void before_forward(bool sync);
  void before_backward(const at::Tensor& loss, bool sync);

  // In place: the mean over ranks of a (small) tensor.
  void mean_(at::Tensor& t);
  // True if any rank passes true.
  bool any(bool flag);
  // Every rank's copy of a tensor of the same shape on every rank (CPU in, CPU out).
  std::vector<at::Tensor> allgather(const at::Tensor& t);
  // Throws DistributedError naming the ranks whose `digest` differs from rank 0's.
  void check_same(const std::string& what, const std::string& digest);
  void barrier();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// SHA-256 over the bytes of the tensors (copied to the CPU), in order.
std::string tensors_digest(const std::vector<at::Tensor>& tensors);

}  // namespace ablate::trainers
