#include "common/health_port.h"

#include <grpcpp/health_check_service_interface.h>

#include "common/strings.h"

namespace strata {
namespace {

// Answers every method but the health service's with UNIMPLEMENTED. A server whose only service is the
// default (callback) health service does not start in gRPC 1.51 ("At least one of the completion queues
// must be frequently polled"); a callback generic service makes it a callback server.
class Unimplemented final : public grpc::CallbackGenericService {
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext*) override {
    class Reactor final : public grpc::ServerGenericBidiReactor {
     public:
      Reactor() {
        Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "this port serves only grpc.health.v1.Health"));
      }
      void OnDone() override { delete this; }
    };
    return new Reactor();
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<HealthPortServer>> HealthPortServer::Start(std::string_view grpc_address, int port) {
  const size_t colon = grpc_address.rfind(':');
  const std::string host(colon == std::string_view::npos ? grpc_address : grpc_address.substr(0, colon));
  std::unique_ptr<HealthPortServer> health(new HealthPortServer());
  // The default health service is all this server registers; it answers for "" (the whole server).
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  health->unimplemented_ = std::make_unique<Unimplemented>();
  builder.RegisterCallbackGenericService(health->unimplemented_.get());
  builder.AddListeningPort(StrCat(host, ":", port), grpc::InsecureServerCredentials(), &health->port_);
  health->server_ = builder.BuildAndStart();
  if (health->server_ == nullptr || health->port_ == 0) {
    return absl::UnavailableError(StrCat("--health-port: cannot listen on ", host, ":", port, " (address in use?)"));
  }
  health->SetServing(true);
  return health;
}

HealthPortServer::~HealthPortServer() {
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
}

void HealthPortServer::SetServing(bool serving) { server_->GetHealthCheckService()->SetServingStatus(serving); }

}  // namespace strata
