// A whole Strata cluster as real processes on loopback, for end-to-end tests: strata-scheduler with its
// front door, strata-kvstore (SSD tier in a scratch directory) and strata-workers on the tiny Llama of
// tests/data, each spawned from the build, waited on with deadlines, killable one by one.
#ifndef STRATA_TESTS_CLUSTER_LOCAL_CLUSTER_H_
#define STRATA_TESTS_CLUSTER_LOCAL_CLUSTER_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/worker.grpc.pb.h"
#include "tests/testing/child_process.h"
#include "tests/testing/metrics_scrape.h"
#include "tests/testing/scratch_dir.h"

namespace strata::cluster_testing {

struct ClusterOptions {
  int workers = 2;
  std::string policy = "cache-aware";
  int lease_ms = 1500;
  int heartbeat_ms = 300;
  uint32_t block_tokens = 16;
  std::vector<std::string> scheduler_args;  // extra flags of each daemon
  std::vector<std::string> kvstore_args;
  std::vector<std::string> worker_args;
};

class LocalCluster {
 public:
  // "" when every binary is built; otherwise what is missing (tests skip, saying so).
  static std::string MissingBinaries();
  // Starts the scheduler, the kvstore and the workers and waits (up to 60 s) until each serves /healthz
  // and the scheduler lists the kvstore and every worker.
  static absl::StatusOr<std::unique_ptr<LocalCluster>> Start(ClusterOptions options);
  ~LocalCluster();  // SIGKILL whatever still runs

  static std::string ModelDir();
  int http_port() const { return http_port_; }
  std::string scheduler_address() const { return "127.0.0.1:" + std::to_string(scheduler_port_); }
  std::string kvstore_address() const { return "127.0.0.1:" + std::to_string(kvstore_port_); }
  int scheduler_metrics_port() const { return scheduler_metrics_port_; }
  int kvstore_metrics_port() const { return kvstore_metrics_port_; }
  std::string worker_address(int i) const { return "127.0.0.1:" + std::to_string(workers_.at(i).grpc_port); }
  int worker_metrics_port(int i) const { return workers_.at(i).metrics_port; }
  std::string worker_id(int i) const { return "worker-" + std::to_string(i); }
  int workers() const { return static_cast<int>(workers_.size()); }

  // kill -9 of the kvstore / a worker.
  void KillKvstore();
  void KillWorker(int i);
  // Starts the kvstore again on the same port and SSD directory; waits until it serves (the time then goes
  // to `serving_at` when given) and is registered.
  absl::Status RestartKvstore(std::chrono::steady_clock::time_point* serving_at = nullptr);
  // Starts one more worker (index workers()); waits until it serves and is registered.
  absl::StatusOr<int> AddWorker();

  // Live holders of `kind` ("worker", "kvstore") per the scheduler's /metrics; -1 when unreadable.
  int Holders(const std::string& kind) const;

 private:
  struct Daemon {
    std::unique_ptr<strata::testing::ChildProcess> process;
    int grpc_port = 0;
    int metrics_port = 0;
  };
  LocalCluster() = default;
  absl::Status StartScheduler();
  absl::Status StartKvstore();
  absl::Status StartWorker(int index);

  ClusterOptions options_;
  strata::testing::ScratchDir dir_ = strata::testing::MakeTempDir("strata-cluster-test");
  std::unique_ptr<strata::testing::ChildProcess> scheduler_;
  int scheduler_port_ = 0, scheduler_metrics_port_ = 0, http_port_ = 0;
  std::unique_ptr<strata::testing::ChildProcess> kvstore_;
  int kvstore_port_ = 0, kvstore_metrics_port_ = 0;
  std::vector<Daemon> workers_;
};

using strata::testing::MetricValue;  // tests/testing/metrics_scrape.h

// One Worker.Generate call, streamed to its end.
struct GenerateResult {
  bool ok = false;
  std::string error;
  std::vector<int32_t> ids;
  strata::proto::PrefixUsage prefix;
};
GenerateResult Generate(const std::string& worker_address, const std::vector<int32_t>& prompt_ids,
                        uint32_t max_new_tokens, bool disable_prefix_cache);

// `count` token ids in [16, 512) from `seed` (the tiny Llama's vocabulary, clear of its specials).
std::vector<int32_t> Tokens(uint64_t seed, size_t count);

}  // namespace strata::cluster_testing

#endif  // STRATA_TESTS_CLUSTER_LOCAL_CLUSTER_H_
