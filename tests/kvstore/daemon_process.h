// A strata-kvstore process for tests: spawned from the built binary with a fresh port file, waited on
// until it serves (with a deadline), stopped by SIGTERM or killed by SIGKILL.
#ifndef STRATA_TESTS_KVSTORE_DAEMON_PROCESS_H_
#define STRATA_TESTS_KVSTORE_DAEMON_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/block_key.h"
#include "kvstore/client/client.h"
#include "tests/testing/child_process.h"
#include "tests/testing/scratch_dir.h"

namespace strata::kvstore::testing {

using strata::testing::MakeTempDir;
using strata::testing::ScratchDir;


class DaemonProcess {
 public:
  // Starts `strata-kvstore --port 0 --metrics-port 0 --port-file ... <args>` and waits up to 20 s for
  // it to serve.
  static absl::StatusOr<std::unique_ptr<DaemonProcess>> Start(std::vector<std::string> args);
  ~DaemonProcess();  // SIGKILL if still running

  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  int metrics_port() const { return metrics_port_; }
  pid_t pid() const { return process_->pid(); }

  // SIGTERM and wait for a clean exit; returns the exit status (0 expected).
  int Terminate();
  // SIGKILL and reap.
  void Kill();

  absl::StatusOr<std::unique_ptr<KvStoreClient>> Connect(
      std::chrono::milliseconds transfer_timeout = std::chrono::seconds(20)) const;

 private:
  DaemonProcess() = default;

  ScratchDir dir_ = MakeTempDir("strata-kvstore-test");
  std::unique_ptr<strata::testing::ChildProcess> process_;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
};

using strata::testing::WaitFor;

// Deterministic test content: a random key, its size from the key, and bytes derived from both, so any
// client can check any block it reads.
BlockKey RandomKey(uint64_t seed);
uint64_t SizeForKey(const BlockKey& key, uint64_t min_bytes, uint64_t max_bytes);
void FillForKey(const BlockKey& key, uint8_t* data, uint64_t bytes);
bool MatchesKey(const BlockKey& key, const uint8_t* data, uint64_t bytes);

}  // namespace strata::kvstore::testing

#endif  // STRATA_TESTS_KVSTORE_DAEMON_PROCESS_H_
