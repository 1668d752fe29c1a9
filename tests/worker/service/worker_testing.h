// Real processes for the worker's tests: strata-worker and strata-scheduler spawned from the build, waited
// on until they serve (with deadlines); a Generate client that collects a stream; metrics over HTTP.
#ifndef STRATA_TESTS_WORKER_SERVICE_WORKER_TESTING_H_
#define STRATA_TESTS_WORKER_SERVICE_WORKER_TESTING_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/scheduler.grpc.pb.h"
#include "proto/worker.grpc.pb.h"
#include "tests/testing/child_process.h"
#include "tests/testing/scratch_dir.h"

namespace strata::worker::testing {

std::string ModelDir(const std::string& name);  // tests/data/models/<name>

class WorkerProcess {
 public:
  // strata-worker --model DIR --grpc-address 127.0.0.1:0 --metrics-port 0 --threads 1 --block-tokens 16
  // --port-file F <args>; waits up to 30 s for the port file.
  static absl::StatusOr<std::unique_ptr<WorkerProcess>> Start(const std::string& model_dir,
                                                              std::vector<std::string> args = {});
  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  int metrics_port() const { return metrics_port_; }
  proto::Worker::Stub& stub() { return *stub_; }
  strata::testing::ChildProcess& process() { return *process_; }
  // GET /metrics; empty on failure.
  std::string Metrics() const;
  // The value of one series line ("name{labels}") of /metrics; -1 when absent.
  double Metric(const std::string& series) const;

 private:
  WorkerProcess() = default;
  strata::testing::ScratchDir dir_ = strata::testing::MakeTempDir("strata-worker-test");
  std::unique_ptr<strata::testing::ChildProcess> process_;
  std::unique_ptr<proto::Worker::Stub> stub_;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
};

class SchedulerProcess {
 public:
  // strata-scheduler serve on loopback (`port` 0: any free) with short heartbeats; waits up to 20 s for
  // it to serve.
  static absl::StatusOr<std::unique_ptr<SchedulerProcess>> Start(int port = 0);
  int port() const { return grpc_port_; }
  void Kill() { process_->Kill(); }
  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  proto::Scheduler::Stub& stub() { return *stub_; }

 private:
  SchedulerProcess() = default;
  std::unique_ptr<strata::testing::ChildProcess> process_;
  std::unique_ptr<proto::Scheduler::Stub> stub_;
  int grpc_port_ = 0;
};

struct StreamResult {
  grpc::Status status;
  std::vector<int32_t> ids;
  std::vector<proto::GenerateResponse> messages;
  const proto::GenerateResponse& last() const { return messages.back(); }
};

// Runs one Generate call to the end (deadline `timeout`); `on_message`, when set, sees each message as
// it arrives and may cancel the call through the context.
StreamResult Generate(proto::Worker::Stub& stub, const proto::GenerateRequest& request,
                      const std::function<void(const proto::GenerateResponse&, grpc::ClientContext&)>& on_message =
                          nullptr,
                      std::chrono::milliseconds timeout = std::chrono::seconds(60));

// A greedy request for `prompt`.
proto::GenerateRequest GreedyRequest(const std::vector<int32_t>& prompt, uint32_t max_new_tokens,
                                     bool ignore_eos = false);

// Deterministic token ids in [2, vocab) (0 and 1 are BOS/EOS in the tiny models), varied by `seed`.
std::vector<int32_t> Prompt(int tokens, int seed, int vocab = 512);

// What engine::Generate gives for `request` run alone in a fresh sequence (CPU, float32).
std::vector<int32_t> GenerateAlone(const std::string& model_dir, const proto::GenerateRequest& request);

}  // namespace strata::worker::testing

#endif  // STRATA_TESTS_WORKER_SERVICE_WORKER_TESTING_H_
