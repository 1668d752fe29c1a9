// The whole `strata-kvstore` process as a library: arena, UCX data plane, SSD tier, store, gRPC server
// with the standard health service, /metrics, and (with a scheduler address) the link that registers it
// with the scheduler and reports its blocks. main() starts it, waits for SIGTERM/SIGINT and drains it.
#ifndef STRATA_KVSTORE_DAEMON_H_
#define STRATA_KVSTORE_DAEMON_H_

#include <grpcpp/grpcpp.h>

#include <memory>

#include "absl/status/statusor.h"
#include "common/daemon.h"
#include "common/health_port.h"
#include "common/metrics.h"
#include "kvstore/event_batcher.h"
#include "kvstore/memlock.h"
#include "kvstore/options.h"
#include "kvstore/scheduler_link.h"
#include "kvstore/service.h"
#include "kvstore/store.h"
#include "kvstore/ucx_server.h"

namespace strata::kvstore {

class KvStoreDaemon {
 public:
  // Serves once this returns; writes options.port_file last.
  static absl::StatusOr<std::unique_ptr<KvStoreDaemon>> Start(const Options& options);
  // Graceful: health turns NOT_SERVING, in-flight calls finish (up to `drain`), then everything stops.
  void Shutdown(std::chrono::milliseconds drain);
  ~KvStoreDaemon();

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_ ? metrics_->port() : -1; }
  int health_port() const { return health_port_ ? health_port_->port() : -1; }

 private:
  KvStoreDaemon() = default;

  Options options_;
  MetricsRegistry registry_;
  std::unique_ptr<UcxServer> ucx_;
  EventBatcher batcher_;  // the store's listener; drained by link_ (or nobody, without a scheduler)
  std::unique_ptr<Store> store_;
  std::unique_ptr<KvStoreService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsHttpServer> metrics_;
  std::unique_ptr<HealthPortServer> health_port_;  // --health-port; null when off
  std::unique_ptr<SchedulerLink> link_;
  std::atomic<bool> serving_{false};
  int grpc_port_ = 0;
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_DAEMON_H_
