// The gRPC face of FrontDoor (proto/frontdoor.proto): the same pipeline as the HTTP routes, with the
// caller's key in the `authorization` metadata and errors as gRPC statuses (codes 1:1 with absl's).
#ifndef STRATA_SCHEDULER_FRONTDOOR_GRPC_SERVICE_H_
#define STRATA_SCHEDULER_FRONTDOOR_GRPC_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include "proto/frontdoor.grpc.pb.h"

namespace strata::frontdoor {

class FrontDoor;

class FrontDoorService final : public proto::FrontDoor::Service {
 public:
  explicit FrontDoorService(FrontDoor* door) : door_(door) {}

  grpc::Status Complete(grpc::ServerContext* context, const proto::CompleteRequest* request,
                        grpc::ServerWriter<proto::CompletionChunk>* writer) override;
  grpc::Status Chat(grpc::ServerContext* context, const proto::ChatRequest* request,
                    grpc::ServerWriter<proto::CompletionChunk>* writer) override;
  grpc::Status ListModels(grpc::ServerContext* context, const proto::ListModelsRequest* request,
                          proto::ListModelsResponse* response) override;

 private:
  FrontDoor* door_;
};

}  // namespace strata::frontdoor

#endif  // STRATA_SCHEDULER_FRONTDOOR_GRPC_SERVICE_H_
