#include "scheduler/frontdoor/frontdoor.h"

#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <thread>

#include "common/daemon.h"
#include "common/log.h"
#include "common/status.h"
#include "common/strings.h"
#include "scheduler/frontdoor/grpc_service.h"
#include "scheduler/frontdoor/http_server.h"

namespace strata::frontdoor {
namespace {

// 5 ms to an hour: a million-token prefill takes many minutes, and a histogram whose last bucket is below
// it says only "more than that".
std::vector<double> RequestBuckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600};
}

}  // namespace

absl::StatusOr<std::unique_ptr<FrontDoor>> FrontDoor::Start(const scheduler::Options& options,
                                                            scheduler::Scheduler* scheduler,
                                                            MetricsRegistry* metrics) {
  if (options.model_dir.empty()) return absl::InvalidArgumentError("front door: no model directory (--model-dir)");
  std::unique_ptr<FrontDoor> door(new FrontDoor());
  if (metrics != nullptr) door->metrics_ = metrics;
  STRATA_ASSIGN_OR_RETURN(door->model_, ServedModel::Load(options.model_dir, options.served_model_name));
  if (!options.api_keys_file.empty()) {
    STRATA_ASSIGN_OR_RETURN(door->keys_, ApiKeys::Load(options.api_keys_file));
  }
  // The channels to workers are the internal plane (mutual TLS, the shared token). The FrontDoor gRPC
  // face below is the public one, like HTTP: its callers send API keys in `authorization`, not the token.
  STRATA_ASSIGN_OR_RETURN(std::shared_ptr<const RpcSecurity> security, RpcSecurity::Load(options.security));
  door->directory_ = std::make_unique<WorkerDirectory>(scheduler, absl::Seconds(2), security);
  door->proxy_ =
      std::make_unique<WorkerProxy>(scheduler, door->directory_.get(), options.request_timeout, options.cache_report);
  door->sharing_ = options.prefix_cache_sharing;
  door->http_metrics_ = options.http_metrics;
  door->request_limits_ = {options.max_request_bytes,
                           options.max_prompt_tokens,
                           options.max_completion_tokens,
                           {options.max_json_depth, options.max_json_elements}};
  door->caller_limits_ = {options.rate_limit_rps, options.rate_limit_burst, options.max_concurrent_requests_per_key};
  for (const std::string_view reason : {"invalid_request", "invalid_api_key", "permission_denied", "not_found",
                                        "request_too_large", "rate_limit", "concurrency_limit"}) {
    door->RefusalCounter(reason);  // every reason shows, at 0, from the start
  }
  door->started_unix_s_ = absl::ToUnixSeconds(absl::Now());
  const MetricLabels model_label = {{"model_name", door->model_->name()}};
  door->ttft_ = &door->metrics_->AddHistogram("strata_frontdoor_ttft_seconds",
                                             "Request arrival to first token, as the front door sees it",
                                             RequestBuckets(), model_label);
  door->e2e_ = &door->metrics_->AddHistogram("strata_frontdoor_e2e_request_seconds",
                                            "Request arrival to its last token, of requests that finished",
                                            RequestBuckets(), model_label);
  door->streams_ = &door->metrics_->AddGauge("strata_frontdoor_open_streams", "Requests whose worker stream is open");
  door->stream_failures_ = &door->metrics_->AddCounter(
      "strata_frontdoor_stream_failures_total",
      "Server-sent-event streams that ended with an error event after their 200 (a worker died mid-stream)");

  if (options.http_port >= 0) {
    ConnectionPolicy policy;
    policy.max_connections = options.http_max_connections;
    policy.max_connections_per_address = options.http_max_connections_per_address;
    policy.header_timeout = options.http_header_timeout;
    policy.read_timeout = options.http_read_timeout;
    policy.keep_alive_timeout = options.http_keep_alive_timeout;
    auto server = std::make_unique<HttpServer>(policy, door->metrics_);
    // Bodies are read by the routes themselves, counted as they arrive (chunked and compressed ones too);
    // this bounds a declared Content-Length before anything is read.
    if (options.max_request_bytes > 0) server->set_payload_max_length(options.max_request_bytes);
    STRATA_ASSIGN_OR_RETURN(door->http_port_, server->Bind(options.http_host, options.http_port));
    door->http_ = std::move(server);
    door->InstallHttpRoutes();
    httplib::Server* raw = door->http_.get();
    std::atomic<bool>* done = &door->http_listen_done_;
    door->http_thread_ = std::thread([raw, done] {
      raw->listen_after_bind();
      done->store(true);
    });
  }
  if (!options.frontdoor_grpc_address.empty()) {
    door->grpc_service_ = std::make_unique<FrontDoorService>(door.get());
    grpc::ServerBuilder builder;
    builder.AddListeningPort(options.frontdoor_grpc_address, grpc::InsecureServerCredentials(), &door->grpc_port_);
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.RegisterService(door->grpc_service_.get());
    if (options.max_request_bytes > 0) {
      builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<uint64_t>(options.max_request_bytes, INT32_MAX)));
    }
    door->grpc_server_ = builder.BuildAndStart();
    if (door->grpc_server_ == nullptr || door->grpc_port_ == 0) {
      return absl::UnavailableError(
          StrCat("front door: cannot listen for gRPC on ", options.frontdoor_grpc_address, " (address in use?)"));
    }
  }
  // Who shares whose cache is a security property: said once, at start, in words.
  const char* tenancy = door->keys_.required()                                     ? "per_api_key_tenant"
                        : door->sharing_ == scheduler::PrefixCacheSharing::kShared ? "shared_by_all_callers"
                                                                                   : "per_client_address_and_user";
  LogInfo(StrCat("event=frontdoor_started model=", door->model_->name(), " http_port=", door->http_port_,
                 " grpc_port=", door->grpc_port_, " api_keys=", door->keys_.required() ? door->keys_.size() : 0,
                 " prefix_cache=", tenancy,
                 " usage_cached_tokens=", options.cache_report == scheduler::CacheReport::kShown ? "shown" : "hidden",
                 " http_metrics=", options.http_metrics == scheduler::HttpMetrics::kOn ? "on" : "off",
                 " max_request_bytes=", options.max_request_bytes, " max_json_depth=", options.max_json_depth,
                 " max_json_elements=", options.max_json_elements, " max_prompt_tokens=", options.max_prompt_tokens,
                 " max_completion_tokens=", options.max_completion_tokens, " http_max_connections=",
                 options.http_max_connections, " http_max_connections_per_address=",
                 options.http_max_connections_per_address, " http_header_timeout=",
                 absl::FormatDuration(options.http_header_timeout), " rate_limit_rps=", options.rate_limit_rps,
                 " rate_limit_burst=", options.rate_limit_burst, " max_concurrent_requests_per_key=",
                 options.max_concurrent_requests_per_key, " context_tokens=", door->model_->context_tokens()));
  return door;
}

void FrontDoor::Shutdown() {
  {
    absl::MutexLock lock(&shutdown_mutex_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  if (grpc_server_ != nullptr) grpc_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (http_ != nullptr) StopHttpServer(*http_, http_listen_done_, http_thread_);
  LogInfo("event=frontdoor_stopped");
}

FrontDoor::~FrontDoor() { Shutdown(); }

absl::StatusOr<std::unique_ptr<GenerationStream>> FrontDoor::Generate(const GenerationRequest& request,
                                                                      const std::string& tenant,
                                                                      const std::string& request_id, absl::Time arrived,
                                                                      absl::Time caller_deadline) {
  STRATA_ASSIGN_OR_RETURN(PreparedRequest prepared, model_->Prepare(request, request_limits_));
  prepared.request_id = request_id;
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<GenerationStream> stream,
                          proxy_->Start(prepared, tenant, model_->tokenizer(), arrived, caller_deadline));
  ttft_->Observe(stream->ttft_s());
  return stream;
}

absl::StatusOr<std::unique_ptr<ChoiceStreams>> FrontDoor::GenerateChoices(const GenerationRequest& request,
                                                                          const std::string& tenant,
                                                                          const std::string& request_id,
                                                                          absl::Time arrived) {
  STRATA_ASSIGN_OR_RETURN(PreparedRequest prepared, model_->Prepare(request, request_limits_));
  prepared.request_id = request_id;
  prepared.prompt_logprobs = request.echo && request.top_logprobs >= 0;
  std::vector<std::unique_ptr<GenerationStream>> streams(request.n);
  STRATA_ASSIGN_OR_RETURN(streams[0], proxy_->Start(prepared, tenant, model_->tokenizer(), arrived));
  ttft_->Observe(streams[0]->ttft_s());
  std::vector<TokenLogprobs> prompt_logprobs = streams[0]->TakePromptLogprobs();
  std::vector<absl::Status> failed(request.n);
  {
    std::vector<std::thread> starts;
    for (uint32_t i = 1; i < request.n; ++i) {
      starts.emplace_back([&, i] {
        PreparedRequest choice = prepared;
        choice.seed = prepared.seed + i;
        choice.prompt_logprobs = false;  // choice 0 brought them
        choice.request_id = StrCat(request_id, "-", i);
        absl::StatusOr<std::unique_ptr<GenerationStream>> stream =
            proxy_->StartBeside(*streams[0], choice, tenant, model_->tokenizer(), arrived);
        if (stream.ok()) {
          streams[i] = *std::move(stream);
        } else {
          failed[i] = stream.status();
        }
      });
    }
    for (std::thread& start : starts) start.join();
  }
  for (const absl::Status& status : failed) STRATA_RETURN_IF_ERROR(status);
  std::vector<int32_t> prompt_ids = std::move(prepared.prompt_ids);
  return std::make_unique<ChoiceStreams>(std::move(streams), std::move(prompt_ids), std::move(prompt_logprobs));
}

int FrontDoor::WorkerCount() { return static_cast<int>(directory_->WorkersOf(model_->name()).size()); }

void FrontDoor::CountRequest(std::string_view endpoint, int http_status) {
  const std::string key = StrCat(endpoint, " ", http_status);
  Counter* counter = nullptr;
  {
    absl::MutexLock lock(&counters_mutex_);
    Counter*& slot = request_counters_[key];
    if (slot == nullptr) {
      slot = &metrics_->AddCounter(
          "strata_frontdoor_requests_total", "Front-door requests by endpoint and status",
          {{"endpoint", std::string(endpoint)}, {"status", StrCat(http_status)}, {"model_name", model_->name()}});
    }
    counter = slot;
  }
  counter->Increment();
}

std::string FrontDoor::TenantOf(const Caller& caller, std::string_view client_address,
                                const GenerationRequest& request) const {
  if (keys_.required() || sharing_ == scheduler::PrefixCacheSharing::kShared) return caller.tenant;
  // Length-prefixed parts, so that no address and user can spell another pair.
  return StrCat("client:", client_address.size(), ":", client_address, "|user:", request.user.size(), ":",
                request.user);
}

absl::Status FrontDoor::CheckModel(const Caller& caller, const std::string& model) const {
  if (caller.MayUse(model)) return absl::OkStatus();
  return ApiError(absl::StatusCode::kPermissionDenied,
                  StrCat("This API key may not use the model `", model, "`."), "permission_denied", "model");
}

Counter* FrontDoor::RefusalCounter(std::string_view reason) {
  absl::MutexLock lock(&counters_mutex_);
  Counter*& slot = refusal_counters_[std::string(reason)];
  if (slot == nullptr) {
    slot = &metrics_->AddCounter("strata_frontdoor_refusals_total",
                                 "Front-door requests refused before reaching a worker (4xx), by reason",
                                 {{"reason", std::string(reason)}});
  }
  return slot;
}

void FrontDoor::CountFailure(std::string_view endpoint, const absl::Status& status) {
  const int http_status = HttpStatusOf(status);
  CountRequest(endpoint, http_status);
  if (http_status >= 400 && http_status < 500) RefusalCounter(RefusalReasonOf(status))->Increment();
}

std::string FrontDoor::NewRequestId(Endpoint endpoint) {
  return StrCat(endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-", started_unix_s_, "-", next_request_++);
}

}  // namespace strata::frontdoor
