// A plaintext gRPC server with only grpc.health.v1.Health (--health-port), for probes that can do neither
// TLS nor tokens (kubelet's native gRPC probes). It mirrors the daemon's serving status: the daemon calls
// SetServing(false) when it starts draining.
#ifndef STRATA_COMMON_HEALTH_PORT_H_
#define STRATA_COMMON_HEALTH_PORT_H_

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace strata {

class HealthPortServer {
 public:
  // Listens on `port` (0 picks a free one) of the host of `grpc_address` (the daemon's gRPC listen
  // address, host:port or [v6]:port); starts SERVING. SetServing is thread-safe.
  static absl::StatusOr<std::unique_ptr<HealthPortServer>> Start(std::string_view grpc_address, int port);
  ~HealthPortServer();
  void SetServing(bool serving);
  int port() const { return port_; }

 private:
  HealthPortServer() = default;
  std::unique_ptr<grpc::CallbackGenericService> unimplemented_;  // outlives server_
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace strata

#endif  // STRATA_COMMON_HEALTH_PORT_H_
