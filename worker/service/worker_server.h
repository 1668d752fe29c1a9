// WorkerServer: the whole strata-worker process as a library. Opens the model, binds it to a backend,
// measures its prefill and decode rates (unless given), starts the engine loop, tier H, the kvstore tier,
// the gRPC server (Worker and grpc.health.v1), /metrics and /healthz, and the scheduler registration.
// main() starts it, waits for SIGTERM/SIGINT and drains it.
#ifndef STRATA_WORKER_SERVICE_WORKER_SERVER_H_
#define STRATA_WORKER_SERVICE_WORKER_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>

#include "absl/status/statusor.h"
#include "common/daemon.h"
#include "common/health_port.h"
#include "common/metrics.h"
#include "scheduler/client/holder_agent.h"
#include "worker/engine/engine.h"
#include "model/model.h"
#include "worker/prefix/gpu_block_cache.h"
#include "worker/prefix/host_block_cache.h"
#include "worker/prefix/kvstore_tier.h"
#include "worker/service/engine_loop.h"
#include "worker/service/options.h"
#include "worker/service/worker_metrics.h"
#include "worker/service/worker_service.h"

namespace strata::worker {

class WorkerServer {
 public:
  // Serves once this returns (writes options.port_file last). InvalidArgument for a bad model or
  // options, Unavailable when an address cannot be bound.
  static absl::StatusOr<std::unique_ptr<WorkerServer>> Start(const WorkerOptions& options);
  // Graceful: health NOT_SERVING, new requests refused (UNAVAILABLE), deregistration from the scheduler,
  // running requests finish (up to `drain`), then everything stops. Idempotent.
  void Shutdown(std::chrono::milliseconds drain);
  ~WorkerServer();

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_http_ ? metrics_http_->port() : -1; }
  int health_port() const { return health_port_ ? health_port_->port() : -1; }

 private:
  WorkerServer() = default;
  absl::Status Calibrate();

  WorkerOptions options_;
  MetricsRegistry registry_;
  std::unique_ptr<WorkerMetrics> metrics_;
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<engine::Engine> engine_;
  double prefill_s_per_token_ = 0;
  double decode_tokens_per_s_ = 0;
  // Declared in the order they start; destroyed in reverse (the agent first, the engine last).
  std::unique_ptr<GpuBlockCache> gpu_cache_;  // after engine_ (its pool), before loop_ (which uses it)
  int64_t kv_pool_blocks_ = 0;
  std::shared_ptr<PayloadPool> payloads_;  // tier H's and the kvstore tier's block payloads; null when neither
  std::shared_ptr<const BlockMac> mac_;    // with payloads_
  std::unique_ptr<HostBlockCache> host_cache_;
  std::unique_ptr<KvStoreTier> kvstore_;
  std::unique_ptr<FetchPolicy> fetch_policy_;  // with kvstore_
  std::unique_ptr<EngineLoop> loop_;
  std::unique_ptr<WorkerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  std::unique_ptr<HealthPortServer> health_port_;  // --health-port; null when off
  std::unique_ptr<scheduler::HolderAgent> agent_;
  // What tier H's listener reports to: set once the agent exists, cleared before it goes.
  std::atomic<scheduler::HolderAgent*> events_to_{nullptr};
  std::atomic<bool> serving_{false};
  std::atomic<bool> shut_down_{false};
  int grpc_port_ = 0;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_SERVICE_WORKER_SERVER_H_
