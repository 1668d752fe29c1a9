// The front door: OpenAI-compatible HTTP (/v1/completions, /v1/chat/completions with server-sent
// events, /v1/models, /health; /metrics only with HttpMetrics::kOn) and the FrontDoor gRPC service
// (proto/frontdoor.proto), both over one pipeline: authenticate (API key -> tenant), parse, tokenize or
// render the chat template, check the context, route (Scheduler::Route by token ids, tenant and
// cache_salt), proxy the chosen worker's Generate stream with incremental detokenization and stop strings.
#ifndef STRATA_SCHEDULER_FRONTDOOR_FRONTDOOR_H_
#define STRATA_SCHEDULER_FRONTDOOR_FRONTDOOR_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics.h"
#include "scheduler/frontdoor/api_keys.h"
#include "scheduler/frontdoor/choices.h"
#include "scheduler/frontdoor/limits.h"
#include "scheduler/frontdoor/served_model.h"
#include "scheduler/frontdoor/worker_proxy.h"
#include "scheduler/options.h"
#include "scheduler/scheduler.h"

namespace httplib {
class Server;
}

namespace strata::frontdoor {

class FrontDoorService;

// Thread-safe. Stops in the destructor (or Shutdown()). One front door per metrics registry (its series
// are added once).
class FrontDoor {
 public:
  // Loads options.model_dir and options.api_keys_file, then serves HTTP on http_host:http_port (unless
  // -1) and gRPC on frontdoor_grpc_address (unless empty). `scheduler` must outlive the front door.
  // Metrics go to `metrics` when given (the scheduler's registry, so they appear on its /metrics; it must
  // outlive the front door), else to a registry of the front door's own; either is also served on the
  // front door's HTTP /metrics when options.http_metrics is kOn. InvalidArgument / NotFound for a bad
  // model directory or key file, Unavailable when a port cannot be bound.
  static absl::StatusOr<std::unique_ptr<FrontDoor>> Start(const scheduler::Options& options,
                                                          scheduler::Scheduler* scheduler,
                                                          MetricsRegistry* metrics = nullptr);
  ~FrontDoor();
  void Shutdown();

  int http_port() const { return http_port_; }  // -1 when off
  int grpc_port() const { return grpc_port_; }  // 0 when off
  const MetricsRegistry& metrics() const { return *metrics_; }
  const ServedModel& model() const { return *model_; }

  // The pipeline both faces use, in this order: Authenticate (401), Admit (429), parse (400; the HTTP
  // face checks the body's size first, 413), CheckModel (403), Generate (Prepare: 404, 400; Route: 503).
  // Nothing before Generate talks to the scheduler or a worker.
  absl::StatusOr<const Caller*> Authenticate(std::string_view authorization) const { return keys_.Find(authorization); }
  // The caller's rate and concurrency (the server's limits with its key's overrides). The Admission
  // holds a concurrency slot until it is destroyed: keep it for the request's whole life, stream included.
  absl::StatusOr<Admission> Admit(const Caller& caller) { return limiter_.Admit(caller.index, caller.LimitsOver(caller_limits_)); }
  // The tenant a request's KV belongs to (it shares cached prefixes only within it): the key's with API
  // keys; without them "default" for every caller under --shared-prefix-cache, else one per client:
  // `client_address` (the peer's IP, no port), narrowed by the request's `user`. A request's cache_salt
  // narrows any of them further (Scheduler::Route, the worker).
  std::string TenantOf(const Caller& caller, std::string_view client_address, const GenerationRequest& request) const;
  // PermissionDenied (403, code permission_denied) when the caller's key may not use `model`.
  absl::Status CheckModel(const Caller& caller, const std::string& model) const;
  const RequestLimits& request_limits() const { return request_limits_; }
  // `request_id` (NewRequestId) travels to the worker for its logs. `caller_deadline`: the caller's own
  // deadline (gRPC), which the worker's call keeps when it is sooner than --request-timeout-s.
  absl::StatusOr<std::unique_ptr<GenerationStream>> Generate(const GenerationRequest& request, const std::string& tenant,
                                                             const std::string& request_id, absl::Time arrived,
                                                             absl::Time caller_deadline = absl::InfiniteFuture());
  // Generate for the request's n choices: choice 0 is routed as Generate does and its prompt prefilled
  // first; then choices 1..n-1 (seeds seed + i, as vLLM) go to the same worker together, where the
  // prefix cache shares the prompt's blocks that choice 0 stored. With echo and logprobs, choice 0 brings
  // the prompt's logprobs. An error of any choice before its first token fails the whole request.
  absl::StatusOr<std::unique_ptr<ChoiceStreams>> GenerateChoices(const GenerationRequest& request,
                                                                 const std::string& tenant,
                                                                 const std::string& request_id, absl::Time arrived);
  // Live workers serving the model.
  int WorkerCount();
  // Metrics: one request finished with `http_status` (gRPC calls count under their HTTP equivalent).
  void CountRequest(std::string_view endpoint, int http_status);
  // One request failed with `status`: counted by HTTP status and, for a 4xx, as a refusal by reason
  // (strata_frontdoor_refusals_total{reason}, RefusalReasonOf).
  void CountFailure(std::string_view endpoint, const absl::Status& status);
  // A stream that had started (HTTP 200 sent) and then failed.
  void CountStreamFailure() { stream_failures_->Increment(); }
  // A request that arrived at `arrived` got its last token now (strata_frontdoor_e2e_request_seconds).
  void RequestFinished(absl::Time arrived) { e2e_->Observe(absl::ToDoubleSeconds(absl::Now() - arrived)); }
  void StreamStarted() { streams_->Add(1); }
  void StreamEnded() { streams_->Add(-1); }
  std::string NewRequestId(Endpoint endpoint);

 private:
  FrontDoor() = default;
  void InstallHttpRoutes();
  Counter* RefusalCounter(std::string_view reason);

  std::unique_ptr<ServedModel> model_;
  ApiKeys keys_;
  scheduler::PrefixCacheSharing sharing_ = scheduler::PrefixCacheSharing::kPerClient;
  scheduler::HttpMetrics http_metrics_ = scheduler::HttpMetrics::kOff;
  RequestLimits request_limits_;
  CallerLimits caller_limits_;
  CallerLimiter limiter_;
  std::unique_ptr<WorkerDirectory> directory_;
  std::unique_ptr<WorkerProxy> proxy_;
  int64_t started_unix_s_ = 0;
  std::atomic<uint64_t> next_request_{1};

  MetricsRegistry own_metrics_;
  MetricsRegistry* metrics_ = &own_metrics_;
  Histogram* ttft_ = nullptr;
  Histogram* e2e_ = nullptr;
  Gauge* streams_ = nullptr;
  Counter* stream_failures_ = nullptr;
  absl::Mutex counters_mutex_;
  absl::flat_hash_map<std::string, Counter*> request_counters_ ABSL_GUARDED_BY(counters_mutex_);
  absl::flat_hash_map<std::string, Counter*> refusal_counters_ ABSL_GUARDED_BY(counters_mutex_);

  std::unique_ptr<httplib::Server> http_;
  std::thread http_thread_;
  std::atomic<bool> http_listen_done_{false};
  int http_port_ = -1;
  std::unique_ptr<FrontDoorService> grpc_service_;
  std::unique_ptr<grpc::Server> grpc_server_;
  int grpc_port_ = 0;
  absl::Mutex shutdown_mutex_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mutex_) = false;
};

}  // namespace strata::frontdoor

#endif  // STRATA_SCHEDULER_FRONTDOOR_FRONTDOOR_H_
