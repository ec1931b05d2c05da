// `ablate launch --nproc N [options] -- COMMAND...` (docs/distributed.md): runs N copies of
// `ablate COMMAND...` on this machine with the torchrun environment (RANK, WORLD_SIZE,
// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), forwards SIGINT / SIGTERM / SIGHUP
// once to every rank (a second one SIGKILLs them), and when a rank fails stops the others:
// SIGTERM, then SIGKILL after --grace seconds. Ranks die with the launcher (PR_SET_PDEATHSIG).
// Only `train` runs data-parallel; other commands would run N identical copies. Exit status: 0 when every rank succeeded, else the first failure's (128 + signal for
// a rank killed by a signal).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "data/core/errors.h"
#include "data/core/log.h"
#include "src/cli/commands.h"

namespace ablate::cli {
namespace {

std::atomic<int> g_forward_signal{0};

extern "C" void on_launcher_signal(int sig) { g_forward_signal = sig; }

struct LaunchArgs {
  int nproc = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;  // 0 = a free port
  double grace = 30;
  std::vector<std::string> command;
};

// A port nobody listens on now (the kernel's choice for port 0).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    throw std::runtime_error(std::string("cannot find a free port: ") + std::strerror(errno));
  }
  close(fd);
  return ntohs(a.sin_port);
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("was killed by signal ") + strsignal(WTERMSIG(status));
  return "stopped";
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

// The subcommand of an ablate command line: the first word that is not a global option.
std::string subcommand_of(const std::vector<std::string>& command) {
  for (size_t i = 0; i < command.size(); ++i) {
    if (command[i] == "--log-level") {
      ++i;
      continue;
    }
    if (command[i].rfind("-", 0) == 0) continue;
    return command[i];
  }
  return "";
}

int run_launch(const LaunchArgs& a) {
  if (a.command.empty()) throw UserError("launch: give the command after --, e.g. ablate launch --nproc 2 -- train CONFIG.yaml");
  if (const std::string sub = subcommand_of(a.command); sub != "train")
    throw UserError("launch: only 'train' runs data-parallel (got '" + sub +
                    "'); other commands would run " + std::to_string(a.nproc) + " identical copies");
  const int port = a.master_port > 0 ? a.master_port : free_port();
  // torchrun's rule: several processes on one machine share its cores.
  const char* threads_env = std::getenv("OMP_NUM_THREADS");
  std::string threads = threads_env ? threads_env : "";
  if (threads.empty()) {
    const long cores = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
    threads = std::to_string(std::max(1L, cores / a.nproc));
  }
  log::info(log::str("launch: ", a.nproc, " processes, rendezvous ", a.master_addr, ":", port, ", OMP_NUM_THREADS=",
                     threads, threads_env ? " (yours)" : " (cores / nproc)"));

  struct sigaction sa {};
  sa.sa_handler = on_launcher_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {}, old_term {}, old_hup {};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  sigaction(SIGHUP, &sa, &old_hup);  // a closed terminal or dropped ssh: stop the ranks cleanly

  std::map<pid_t, int> rank_of;
  const pid_t launcher = getpid();
  for (int r = 0; r < a.nproc; ++r) {
    const pid_t pid = fork();
    if (pid < 0) {
      const std::string why = std::strerror(errno);
      for (const auto& [p, rr] : rank_of) kill(p, SIGKILL);
      for (const auto& [p, rr] : rank_of) waitpid(p, nullptr, 0);
      throw std::runtime_error("fork of rank " + std::to_string(r) + ": " + why);
    }
    if (pid == 0) {
      // Own process group: a Ctrl-C on the terminal reaches the launcher only, which forwards it
      // once. The rank gets SIGTERM (checkpoint, stop) if the launcher dies, e.g. by SIGKILL.
      setpgid(0, 0);
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      signal(SIGHUP, SIG_DFL);
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != launcher) _exit(143);  // the launcher died before prctl
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(a.nproc).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(a.nproc).c_str(), 1);
      setenv("MASTER_ADDR", a.master_addr.c_str(), 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      setenv("OMP_NUM_THREADS", threads.c_str(), 1);
      std::vector<std::string> argv_s = {"ablate"};
      argv_s.insert(argv_s.end(), a.command.begin(), a.command.end());
      std::vector<char*> argv;
      for (auto& s : argv_s) argv.push_back(s.data());
      argv.push_back(nullptr);
      execv("/proc/self/exe", argv.data());
      std::fprintf(stderr, "ablate launch: rank %d: cannot execute /proc/self/exe: %s\n", r, std::strerror(errno));
      _exit(127);
    }
    rank_of[pid] = r;
    log::info(log::str("launch: rank ", r, " is pid ", pid));
  }

  using Clock = std::chrono::steady_clock;
  int first_failure = 0;
  bool forwarded = false;
  bool stopping = false;
  Clock::time_point kill_at{};
  while (!rank_of.empty()) {
    if (const int sig = g_forward_signal.exchange(0); sig != 0) {
      if (!forwarded) {
        forwarded = true;
        const int to_ranks = sig == SIGHUP ? SIGTERM : sig;
        log::info(log::str("launch: ", strsignal(sig), ": forwarding to every rank (they checkpoint and stop; ",
                           "a second signal kills them)"));
        for (const auto& [pid, r] : rank_of) kill(pid, to_ranks);
      } else {
        log::warn("launch: second signal: SIGKILL to every rank (no checkpoint)");
        for (const auto& [pid, r] : rank_of) kill(pid, SIGKILL);
      }
    }
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0 && rank_of.count(pid)) {
      const int r = rank_of[pid];
      rank_of.erase(pid);
      if (exit_code(status) != 0) {
        log::error(log::str("launch: rank ", r, " (pid ", pid, ") ", describe(status)));
        if (first_failure == 0) first_failure = exit_code(status);
        if (!stopping && !rank_of.empty()) {
          stopping = true;
          kill_at = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(a.grace * 1000));
          log::error(log::str("launch: stopping the other ranks (SIGTERM, SIGKILL after ", a.grace, " s)"));
          for (const auto& [p, rr] : rank_of) kill(p, SIGTERM);
        }
      } else {
        log::info(log::str("launch: rank ", r, " finished"));
      }
      continue;
    }
    if (pid < 0 && errno == ECHILD) break;
    if (stopping && Clock::now() >= kill_at) {
      for (const auto& [p, r] : rank_of) {
        log::error(log::str("launch: rank ", r, " (pid ", p, ") did not stop; SIGKILL"));
        kill(p, SIGKILL);
      }
      stopping = false;  // reaped by the loop
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGHUP, &old_hup, nullptr);
  return first_failure;
}

}  // namespace

void add_launch_command(CLI::App& app, Action& action) {
  auto args = std::make_shared<LaunchArgs>();
  auto* cmd = app.add_subcommand(
      "launch", "run N data-parallel ranks of an ablate command on this machine: ablate launch --nproc 2 -- train CONFIG");
  cmd->add_option("--nproc", args->nproc, "number of processes (ranks)")->required()->check(CLI::Range(1, 1024));
  cmd->add_option("--master-addr", args->master_addr, "rendezvous address (rank 0 listens there)")->capture_default_str();
  cmd->add_option("--master-port", args->master_port, "rendezvous port; 0 = a free one")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--grace", args->grace, "seconds between SIGTERM and SIGKILL for the survivors of a failed rank")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  cmd->add_option("command", args->command, "the ablate command each rank runs, after --")->expected(-1);
  cmd->callback([args, &action] { action = [args] { return run_launch(*args); }; });
}

}  // namespace ablate::cli
