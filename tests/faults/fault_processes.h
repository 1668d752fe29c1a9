// Daemons for the fault suites, spawned as real processes: on fixed ports (so a restarted daemon, or a
// proxy in front of it, keeps its address), optionally under an environment (LD_PRELOAD of the I/O
// fault shim), killable with SIGKILL and restartable on the same port and directories.
#ifndef STRATA_TESTS_FAULTS_FAULT_PROCESSES_H_
#define STRATA_TESTS_FAULTS_FAULT_PROCESSES_H_

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tests/testing/child_process.h"
#include "tests/testing/loopback.h"

namespace strata::faults {

using strata::testing::FreePort;
using strata::testing::Healthy;
// The tiny Llama of tests/data.
std::string ModelDir();
// "" when strata-kvstore, strata-worker and strata-scheduler are built; otherwise what is missing.
std::string MissingBinaries();
// Whether this build runs under a sanitizer (the I/O shim is not preloaded into those: it would have to
// come before the sanitizer's runtime).
bool SanitizerBuild();

// One daemon process. `argv` starts with the binary; "--port-file F" is appended when `port_file` is
// set, and the daemon is ready once F names its ports (grpc_port=N metrics_port=M) and /healthz answers.
class Daemon {
 public:
  struct Spec {
    std::string name;                     // for messages: "strata-kvstore"
    std::vector<std::string> argv;
    std::vector<std::string> env;         // "KEY=VALUE", run through /usr/bin/env
    std::filesystem::path port_file;      // empty: ready when /healthz on `metrics_port` answers
    int metrics_port = 0;                 // with no port file
  };
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(Spec spec,
                                                       std::chrono::seconds timeout = std::chrono::seconds(60));
  ~Daemon();  // SIGKILL if still running

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  pid_t pid() const { return process_->pid(); }
  bool running() { return !process_->Wait(std::chrono::milliseconds(0)).has_value(); }
  void Kill() { process_->Kill(); }
  // SIGTERM, then the exit status (SIGKILL's after `timeout`).
  int Terminate(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Resident memory (VmRSS) in bytes, from /proc; 0 when gone.
  uint64_t RssBytes() const;

 private:
  Daemon() = default;
  std::unique_ptr<strata::testing::ChildProcess> process_;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
};

// strata-kvstore on 127.0.0.1:`port` with its metrics on any free port, plus `args`.
absl::StatusOr<std::unique_ptr<Daemon>> StartKvstore(int port, const std::filesystem::path& port_file,
                                                     std::vector<std::string> args,
                                                     std::vector<std::string> env = {});
// strata-worker on the tiny Llama (one CPU thread, 16-token blocks, any free ports), plus `args`.
absl::StatusOr<std::unique_ptr<Daemon>> StartWorker(const std::filesystem::path& port_file,
                                                    std::vector<std::string> args);

// Writes tests/testing/io_fault_shim.c's control file: `line` is "ok", "enospc [N]" or "eio [N]". Written
// whole (by rename), so the daemon never reads half a line.
void SetIoFault(const std::filesystem::path& control, const std::string& line);

// This process's resident memory and open file descriptors, for "does not grow" checks.
uint64_t SelfRssBytes();
int SelfOpenFds();

}  // namespace strata::faults

#endif  // STRATA_TESTS_FAULTS_FAULT_PROCESSES_H_
