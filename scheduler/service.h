// The gRPC face of the scheduler (proto/scheduler.proto): converts messages to the library's types,
// calls Scheduler, converts Status once at the edge. SchedulerServer runs it with the health service,
// /metrics, and a lease reaper, and drains on Shutdown().
#ifndef STRATA_SCHEDULER_SERVICE_H_
#define STRATA_SCHEDULER_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/daemon.h"
#include "common/health_port.h"
#include "common/metrics.h"
#include "proto/scheduler.grpc.pb.h"
#include "scheduler/clock.h"
#include "scheduler/options.h"
#include "scheduler/scheduler.h"

namespace strata::scheduler {

class SchedulerService final : public proto::Scheduler::Service {
 public:
  explicit SchedulerService(Scheduler* scheduler) : scheduler_(scheduler) {}

  grpc::Status Register(grpc::ServerContext*, const proto::RegisterRequest* request,
                        proto::RegisterResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const proto::HeartbeatRequest* request,
                         proto::HeartbeatResponse* response) override;
  grpc::Status Deregister(grpc::ServerContext*, const proto::DeregisterRequest* request,
                          proto::DeregisterResponse* response) override;
  grpc::Status KvEvents(grpc::ServerContext* context,
                        grpc::ServerReaderWriter<proto::KvEventReply, proto::KvEventMessage>* stream) override;
  grpc::Status Route(grpc::ServerContext*, const proto::RouteRequest* request, proto::RouteResponse* response) override;
  grpc::Status ListHolders(grpc::ServerContext*, const proto::ListHoldersRequest* request,
                           proto::ListHoldersResponse* response) override;

  // Options the responses quote (lease, heartbeat interval).
  void set_options(const Options& options) { options_ = options; }

 private:
  Scheduler* scheduler_;
  Options options_;
};

// Conversions at the edge, exposed for tests.
absl::StatusOr<Registration> RegistrationFromProto(const proto::RegisterRequest& request);

// The daemon's pieces, started and stopped together. Thread-safe.
class SchedulerServer {
 public:
  // Listens on options.grpc_address and options.metrics_host:metrics_port (port 0 in either picks a
  // free one). Unavailable when an address cannot be bound.
  static absl::StatusOr<std::unique_ptr<SchedulerServer>> Start(const Options& options);
  ~SchedulerServer();

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_http_->port(); }
  // The --health-port server's port; -1 when off.
  int health_port() const { return health_port_ != nullptr ? health_port_->port() : -1; }
  Scheduler& scheduler() { return *scheduler_; }
  // The registry served on the metrics port; others (the front door) may add their series to it. Lives as
  // long as the server.
  MetricsRegistry& metrics() { return metrics_; }

  // Health NOT_SERVING, stop accepting, let in-flight calls finish (at most `grace`), stop the reaper.
  void Shutdown(absl::Duration grace = absl::Seconds(5));

 private:
  SchedulerServer() = default;

  Options options_;
  RealClock clock_;
  MetricsRegistry metrics_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<SchedulerService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  std::unique_ptr<HealthPortServer> health_port_;  // --health-port; null when off
  int grpc_port_ = 0;
  std::atomic<bool> serving_{false};
  absl::Notification stop_;
  std::thread reaper_;
  absl::Mutex shutdown_mutex_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mutex_) = false;
};

}  // namespace strata::scheduler

#endif  // STRATA_SCHEDULER_SERVICE_H_
