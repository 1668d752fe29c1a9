// WorkerService: proto/worker.proto's Worker service over an EngineLoop. Validates each request at the
// edge (INVALID_ARGUMENT with the field and the limit, FAILED_PRECONDITION for another model's
// fingerprint), streams its tokens as the engine produces them, and cancels it when the caller goes away.
#ifndef STRATA_WORKER_SERVICE_WORKER_SERVICE_H_
#define STRATA_WORKER_SERVICE_WORKER_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/block_key.h"
#include "proto/worker.grpc.pb.h"
#include "worker/service/engine_loop.h"
#include "worker/service/worker_metrics.h"

namespace strata::worker {

// What the service knows of the model it serves.
struct ServedModel {
  std::string name;
  BlockKeyContext key_context;  // fingerprint, block size, KV dtype (tenant salt unused)
  int64_t vocab_size = 0;
  int64_t max_context_tokens = 0;  // prompt + new tokens
  std::string backend;
  std::vector<int32_t> eos_token_ids;
};

// The request as the engine loop takes it, or INVALID_ARGUMENT / FAILED_PRECONDITION saying why not.
absl::StatusOr<GenerationRequest> ValidateGenerateRequest(const proto::GenerateRequest& request,
                                                          const ServedModel& model);

class WorkerService final : public proto::Worker::Service {
 public:
  // `loop` and `metrics` must outlive the service.
  WorkerService(ServedModel model, EngineLoop* loop, WorkerMetrics* metrics)
      : model_(std::move(model)), loop_(loop), metrics_(metrics) {}

  grpc::Status Generate(grpc::ServerContext* context, const proto::GenerateRequest* request,
                        grpc::ServerWriter<proto::GenerateResponse>* writer) override;
  grpc::Status Info(grpc::ServerContext* context, const proto::InfoRequest* request,
                    proto::InfoResponse* response) override;

  const ServedModel& model() const { return model_; }

 private:
  const ServedModel model_;
  EngineLoop* const loop_;
  WorkerMetrics* const metrics_;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_SERVICE_WORKER_SERVICE_H_
