// A whole Strata cluster as real processes, for end-to-end tests: strata-scheduler replicas with their
// front doors, strata-kvstore (SSD tier in a scratch directory) and strata-workers on the tiny Llama of
// tests/data (several kvstores when asked: workers spread blocks over them by rendezvous hashing), each
// spawned from the build, waited on with deadlines, killable one by one. On loopback by default; given
// hosts in network namespaces (tests/testing/netns_hosts.h), each daemon runs on its own host (the
// kvstores share one), binds that host's address and reaches the others by theirs (UCX over TCP).
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
#include "tests/testing/netns_hosts.h"
#include "tests/testing/scratch_dir.h"

namespace strata::cluster_testing {

struct ClusterOptions {
  int workers = 2;
  // Scheduler replicas (each with its front door): every worker and kvstore registers with each.
  int schedulers = 1;
  // Kvstores: each worker is given all of them, in index order (unless added with its own list).
  int kvstores = 1;
  std::string policy = "cache-aware";
  int lease_ms = 1500;
  int heartbeat_ms = 300;
  uint32_t block_tokens = 16;
  std::vector<std::string> scheduler_args;  // extra flags of each daemon
  std::vector<std::string> kvstore_args;
  std::vector<std::string> worker_args;
  // Where the daemons run. Null: all on 127.0.0.1 of this process's network namespace. Otherwise each on
  // a host of `hosts` (which must outlive the cluster): scheduler replica s on scheduler_hosts[s], the
  // kvstores on kvstore_host (each on its own port), worker i on worker_hosts[i % size].
  const strata::testing::NetnsHosts* hosts = nullptr;
  std::vector<int> scheduler_hosts = {0, 1};
  int kvstore_host = 1;
  std::vector<int> worker_hosts = {2, 3};
};

class LocalCluster {
 public:
  // "" when every binary is built; otherwise what is missing (tests skip, saying so).
  static std::string MissingBinaries();
  // Starts the schedulers, the kvstores and the workers and waits (up to 60 s) until each serves /healthz
  // and every scheduler replica lists every kvstore and worker.
  static absl::StatusOr<std::unique_ptr<LocalCluster>> Start(ClusterOptions options);
  ~LocalCluster();  // SIGKILL whatever still runs

  static std::string ModelDir();
  // Scheduler replica `s` (0 unless said): its front door's HTTP port, gRPC address and metrics port, and
  // the host address all of them are on.
  int http_port(int s = 0) const { return schedulers_.at(static_cast<size_t>(s)).http_port; }
  std::string scheduler_host(int s = 0) const { return schedulers_.at(static_cast<size_t>(s)).host; }
  std::string scheduler_address(int s = 0) const { return Address(schedulers_.at(static_cast<size_t>(s))); }
  int scheduler_metrics_port(int s = 0) const { return schedulers_.at(static_cast<size_t>(s)).metrics_port; }
  int schedulers() const { return static_cast<int>(schedulers_.size()); }
  // Kvstore `k` (0 unless said): its host address, gRPC address and metrics port.
  std::string kvstore_host(int k = 0) const { return kvstores_.at(static_cast<size_t>(k)).host; }
  std::string kvstore_address(int k = 0) const { return Address(kvstores_.at(static_cast<size_t>(k))); }
  int kvstore_metrics_port(int k = 0) const { return kvstores_.at(static_cast<size_t>(k)).metrics_port; }
  int kvstores() const { return static_cast<int>(kvstores_.size()); }
  std::string worker_host(int i) const { return workers_.at(static_cast<size_t>(i)).host; }
  std::string worker_address(int i) const { return Address(workers_.at(static_cast<size_t>(i))); }
  int worker_metrics_port(int i) const { return workers_.at(static_cast<size_t>(i)).metrics_port; }
  std::string worker_id(int i) const { return "worker-" + std::to_string(i); }
  int workers() const { return static_cast<int>(workers_.size()); }

  // One sample of a daemon's /metrics (nullopt when it does not answer or lacks the series).
  std::optional<double> SchedulerMetric(int s, const std::string& series) const;
  std::optional<double> KvstoreMetric(int k, const std::string& series) const;
  std::optional<double> KvstoreMetric(const std::string& series) const { return KvstoreMetric(0, series); }
  std::optional<double> WorkerMetric(int i, const std::string& series) const;

  // kill -9 of a kvstore (0 unless said) / a worker / a scheduler replica.
  void KillKvstore(int k = 0);
  void KillWorker(int i);
  void KillScheduler(int s);
  // Starts kvstore `k` again on the same port and SSD directory; waits until it serves (the time then goes
  // to `serving_at` when given) and is registered with every scheduler replica.
  absl::Status RestartKvstore(int k, std::chrono::steady_clock::time_point* serving_at);
  absl::Status RestartKvstore(std::chrono::steady_clock::time_point* serving_at = nullptr) {
    return RestartKvstore(0, serving_at);
  }
  // Starts one more kvstore (index kvstores()) on kvstore_host; waits until it serves and is registered with
  // every scheduler replica. Workers started before keep the kvstores they were given.
  absl::StatusOr<int> AddKvstore();
  // Starts one more worker (index workers()); waits until it serves and is registered. `kvstores`: the
  // indices of the kvstores it is given, in that order of --kvstore flags; empty: all, in index order.
  absl::StatusOr<int> AddWorker(const std::vector<int>& kvstores = {});

  // Live holders of `kind` ("worker", "kvstore") per scheduler replica `s`'s /metrics; -1 when unreadable.
  int Holders(const std::string& kind, int s = 0) const;

 private:
  struct Daemon {
    std::unique_ptr<strata::testing::ChildProcess> process;
    std::string host = "127.0.0.1";
    int host_index = -1;  // in options_.hosts; -1 on loopback
    int grpc_port = 0;
    int metrics_port = 0;
    int http_port = 0;  // schedulers: the front door's
  };
  LocalCluster() = default;
  static std::string Address(const Daemon& daemon) { return daemon.host + ":" + std::to_string(daemon.grpc_port); }
  // Places `daemon` on `host` of options_.hosts (nothing on loopback).
  void Place(Daemon& daemon, int host) const;
  // argv run on the daemon's host.
  std::vector<std::string> OnHost(const Daemon& daemon, std::vector<std::string> argv) const;
  // "--scheduler" and each replica's address.
  std::vector<std::string> SchedulerFlags() const;
  absl::Status StartScheduler(int s);
  absl::Status StartKvstore(int k);
  absl::Status StartWorker(int index, const std::vector<int>& kvstores = {});
  // Waits until kvstore `k` is registered with every scheduler replica.
  absl::Status WaitKvstoreRegistered(int k, const std::string& what) const;

  ClusterOptions options_;
  strata::testing::ScratchDir dir_ = strata::testing::MakeTempDir("strata-cluster-test");
  std::vector<Daemon> schedulers_;
  std::vector<Daemon> kvstores_;  // grpc_port chosen before the first start, kept across restarts
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
