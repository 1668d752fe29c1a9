// A real Worker service (proto/worker.proto) over Strata's CPU engine, for the front door's tests while
// strata-worker is being written: it opens a model directory, serves Info, and streams Generate's tokens
// as the engine samples them (one request at a time; no KV cache across requests, so cached_tokens is 0).
#ifndef STRATA_TESTS_SCHEDULER_FRONTDOOR_ENGINE_WORKER_H_
#define STRATA_TESTS_SCHEDULER_FRONTDOOR_ENGINE_WORKER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "proto/worker.grpc.pb.h"
#include "scheduler/registry.h"
#include "worker/engine/engine.h"
#include "model/model.h"

namespace strata::frontdoor::testing {

class EngineWorker final : public proto::Worker::Service {
 public:
  // Opens `dir` on the CPU backend and listens on 127.0.0.1 (a free port).
  static absl::StatusOr<std::unique_ptr<EngineWorker>> Start(const std::filesystem::path& dir, std::string model_name,
                                                             uint32_t block_tokens = 16);
  ~EngineWorker() override;

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const model::Model& model() const { return *model_; }
  // What this worker registers with the scheduler as `holder_id`.
  scheduler::Registration MakeRegistration(const std::string& holder_id) const;

  // After this many tokens of a stream, hold it until the call is cancelled (a worker that hangs or dies
  // mid-stream). -1 (default): never; setting -1 lifts a hold in place (the stream goes on).
  void set_hold_after_tokens(int tokens) { hold_after_tokens_ = tokens; }
  // The worker dies: the server shuts down at once, cancelling every stream.
  void Kill();
  int generate_calls() const { return generate_calls_.load(); }
  // The last Generate request received (tenant, salt, flags as the front door sent them).
  proto::GenerateRequest last_request() {
    absl::MutexLock lock(&last_mutex_);
    return last_request_;
  }

  grpc::Status Generate(grpc::ServerContext* context, const proto::GenerateRequest* request,
                        grpc::ServerWriter<proto::GenerateResponse>* writer) override;
  grpc::Status Info(grpc::ServerContext* context, const proto::InfoRequest* request,
                    proto::InfoResponse* response) override;

 private:
  EngineWorker() = default;

  std::string model_name_;
  uint32_t block_tokens_ = 16;
  std::unique_ptr<model::Model> model_;
  absl::Mutex engine_mutex_;
  std::unique_ptr<engine::Engine> engine_;  // not thread-safe: one request at a time
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<int> hold_after_tokens_{-1};
  std::atomic<int> generate_calls_{0};
  bool killed_ = false;
  absl::Mutex last_mutex_;
  proto::GenerateRequest last_request_ ABSL_GUARDED_BY(last_mutex_);
};

}  // namespace strata::frontdoor::testing

#endif  // STRATA_TESTS_SCHEDULER_FRONTDOOR_ENGINE_WORKER_H_
