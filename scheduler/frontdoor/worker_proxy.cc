#include "scheduler/frontdoor/worker_proxy.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <utility>

#include "common/log.h"
#include "common/rpc.h"
#include "common/strings.h"

namespace strata::frontdoor {
namespace {

constexpr absl::Duration kInfoRetry = absl::Seconds(3);
constexpr absl::Duration kReconnectFirst = absl::Milliseconds(100);
constexpr absl::Duration kReconnectMax = absl::Seconds(1);
// HTTP/2 keepalive on the channels to workers: a worker cut off by a partition (no reset, no FIN) fails
// its streams within time + timeout, not at the request's deadline (600 s by default). Workers accept
// pings this often (worker_server.cc).
constexpr absl::Duration kKeepaliveTime = absl::Seconds(2);
constexpr absl::Duration kKeepaliveTimeout = absl::Seconds(2);
// Routes tried for a request whose worker is unreachable or full before any output.
constexpr int kAttempts = 3;

std::chrono::milliseconds Millis(absl::Duration d) { return std::chrono::milliseconds(absl::ToInt64Milliseconds(d)); }

// A worker's refusal or failure before any output, as the client should see it.
absl::Status BeforeOutput(const grpc::Status& status, const std::string& worker_id, const std::string& address) {
  const std::string where = StrCat("worker ", worker_id, " (", address, ")");
  const std::string message(status.error_message());
  switch (status.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return ApiError(absl::StatusCode::kInvalidArgument, StrCat(where, " refused the request: ", message));
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return ApiError(absl::StatusCode::kResourceExhausted, StrCat(where, " is full: ", message, "; retry"), {}, {}, 503);
    case grpc::StatusCode::FAILED_PRECONDITION:
      return ApiError(absl::StatusCode::kUnavailable,
                      StrCat(where, " refused the model fingerprint (", message, "); retry"), {}, {}, 503);
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::DATA_LOSS:
      return ApiError(absl::StatusCode::kInternal, StrCat(where, " failed: ", message), {}, {}, 502);
    default:
      return ApiError(absl::StatusCode::kUnavailable,
                      StrCat(where, " could not serve the request (", static_cast<int>(status.error_code()), ": ",
                             message, "); retry"),
                      {}, {}, 503);
  }
}

proto::GenerateRequest GenerateRequestOf(const PreparedRequest& request, const Sha256Digest& fingerprint,
                                         const std::string& tenant) {
  proto::GenerateRequest generate;
  generate.set_model_fingerprint(std::string(fingerprint.begin(), fingerprint.end()));
  generate.mutable_prompt_ids()->Assign(request.prompt_ids.begin(), request.prompt_ids.end());
  generate.set_max_new_tokens(request.max_tokens);
  proto::SamplingParams* sampling = generate.mutable_sampling();
  sampling->set_temperature(request.temperature);
  sampling->set_top_k(request.top_k);
  sampling->set_top_p(request.top_p);
  sampling->set_seed(request.seed);
  sampling->set_min_p(request.min_p);
  sampling->set_presence_penalty(request.presence_penalty);
  sampling->set_frequency_penalty(request.frequency_penalty);
  sampling->set_repetition_penalty(request.repetition_penalty);
  generate.mutable_stop_token_ids()->Assign(request.stop_token_ids.begin(), request.stop_token_ids.end());
  generate.set_ignore_eos(request.ignore_eos);
  generate.set_tenant(tenant);
  generate.set_cache_salt(request.cache_salt);
  generate.set_disable_prefix_cache(request.disable_prefix_cache);
  generate.set_request_id(request.request_id);
  if (request.top_logprobs >= 0) {
    generate.set_logprobs(true);
    generate.set_top_logprobs(static_cast<uint32_t>(request.top_logprobs));
  }
  generate.set_prompt_logprobs(request.prompt_logprobs);
  return generate;
}

}  // namespace

WorkerDirectory::WorkerDirectory(scheduler::Scheduler* scheduler, absl::Duration info_timeout,
                                 std::shared_ptr<const RpcSecurity> security, absl::Duration watch_interval)
    : scheduler_(scheduler),
      info_timeout_(info_timeout),
      security_(std::move(security)),
      watch_interval_(watch_interval) {
  watcher_ = std::thread([this] { Watch(); });
}

WorkerDirectory::~WorkerDirectory() {
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
  }
  watcher_.join();
}

WorkerDirectory::Connection WorkerDirectory::ConnectionTo(const std::string& address) {
  absl::MutexLock lock(&mutex_);
  Connection& connection = connections_[address];
  if (connection.stub == nullptr) {
    grpc::ChannelArguments arguments;
    // A dead worker's address is tried again soon (gRPC's default backoff grows to 2 minutes): the
    // watcher marks it reachable on the first connection that works.
    arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                     static_cast<int>(absl::ToInt64Milliseconds(kReconnectFirst)));
    arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, static_cast<int>(absl::ToInt64Milliseconds(kReconnectFirst)));
    arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(absl::ToInt64Milliseconds(kReconnectMax)));
    arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(absl::ToInt64Milliseconds(kKeepaliveTime)));
    arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(absl::ToInt64Milliseconds(kKeepaliveTimeout)));
    arguments.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);  // a long stream sends the worker nothing
    connection.channel = security_->CreateChannel(address, arguments);
    connection.stub = proto::Worker::NewStub(connection.channel);
  }
  return connection;
}

std::shared_ptr<proto::Worker::Stub> WorkerDirectory::Stub(const std::string& address) {
  return ConnectionTo(address).stub;
}

void WorkerDirectory::ReportUnreachable(const std::string& worker_id, uint64_t epoch) {
  {
    absl::MutexLock lock(&mutex_);
    auto it = known_.find(worker_id);
    if (it != known_.end() && it->second.epoch == epoch) it->second.unreachable = true;
  }
  // Every report goes to the scheduler: one within the backoff changes nothing there, one after it
  // doubles the backoff.
  (void)scheduler_->MarkUnreachable(worker_id, epoch);  // NotFound: it left already
}

void WorkerDirectory::ReportReachable(const std::string& worker_id, uint64_t epoch) {
  {
    absl::MutexLock lock(&mutex_);
    auto it = known_.find(worker_id);
    if (it == known_.end() || it->second.epoch != epoch || !it->second.unreachable) return;
    it->second.unreachable = false;
  }
  (void)scheduler_->MarkReachable(worker_id, epoch);
}

void WorkerDirectory::Watch() {
  struct Watched {
    std::string id;
    uint64_t epoch;
    std::shared_ptr<grpc::Channel> channel;
  };
  while (true) {
    std::vector<Watched> watched;
    {
      absl::MutexLock lock(&mutex_);
      if (mutex_.AwaitWithTimeout(absl::Condition(&stopping_), watch_interval_)) return;
      for (const auto& [id, known] : known_) {
        if (!known.model) continue;
        auto connection = connections_.find(known.model->address);
        if (connection != connections_.end()) watched.push_back({id, known.epoch, connection->second.channel});
      }
    }
    for (const Watched& w : watched) {
      // try_to_connect: an idle channel (its connection closed, as when the worker died) connects now,
      // so a dead worker is found refused within a watch interval or two, whether or not requests come.
      const grpc_connectivity_state state = w.channel->GetState(/*try_to_connect=*/true);
      if (state == GRPC_CHANNEL_TRANSIENT_FAILURE) {
        ReportUnreachable(w.id, w.epoch);
      } else if (state == GRPC_CHANNEL_READY) {
        ReportReachable(w.id, w.epoch);
      }
    }
  }
}

std::vector<WorkerModel> WorkerDirectory::Refresh() {
  std::vector<scheduler::HolderSnapshot> holders = scheduler_->Holders();
  const absl::Time now = absl::Now();
  // Who must be asked: new registrations, and failed ones whose retry time came.
  std::vector<const scheduler::HolderSnapshot*> ask;
  {
    absl::MutexLock lock(&mutex_);
    absl::flat_hash_set<std::string> live, live_addresses;
    for (const scheduler::HolderSnapshot& h : holders) {
      if (h.kind != scheduler::HolderKind::kWorker) continue;
      live.insert(h.holder_id);
      live_addresses.insert(h.address);
      auto it = known_.find(h.holder_id);
      if (it != known_.end() && it->second.epoch != h.epoch) {
        // A new registration of the id (a restart, maybe at the same address): a fresh channel, not the
        // dead process's one in reconnect backoff.
        connections_.erase(h.address);
        if (it->second.model) connections_.erase(it->second.model->address);
      }
      if (it == known_.end() || it->second.epoch != h.epoch || (!it->second.model && now >= it->second.retry_after)) {
        ask.push_back(&h);
      }
    }
    absl::erase_if(known_, [&](const auto& entry) { return !live.contains(entry.first); });
    // The channel of a worker that left goes too (a call still running on it holds its own reference); a
    // worker that comes back at the address gets a fresh channel, not one in reconnect backoff.
    absl::erase_if(connections_, [&](const auto& entry) { return !live_addresses.contains(entry.first); });
  }
  // One caller asks at a time; the others wait for its answers instead of asking the same workers again (a
  // burst of requests to a worker the front door has not met yet sent one Info call, and logged a line, each).
  std::optional<absl::MutexLock> asking;
  if (!ask.empty()) {
    asking.emplace(&info_mutex_);
    absl::MutexLock lock(&mutex_);
    const absl::Time after_wait = absl::Now();
    std::erase_if(ask, [&](const scheduler::HolderSnapshot* h) {
      auto it = known_.find(h->holder_id);
      return it != known_.end() && it->second.epoch == h->epoch &&
             (it->second.model || after_wait < it->second.retry_after);
    });
  }
  for (const scheduler::HolderSnapshot* h : ask) {
    std::shared_ptr<proto::Worker::Stub> stub = Stub(h->address);
    grpc::ClientContext context;
    SetDeadline(context, Millis(info_timeout_));
    proto::InfoResponse info;
    const grpc::Status status = stub->Info(&context, proto::InfoRequest(), &info);
    Known known;
    known.epoch = h->epoch;
    if (status.ok() && info.key_scheme().model_fingerprint().size() == 32) {
      WorkerModel model;
      model.worker_id = h->holder_id;
      model.address = h->address;
      model.model_name = info.model_name();
      std::memcpy(model.fingerprint.data(), info.key_scheme().model_fingerprint().data(), 32);
      model.block_tokens = info.key_scheme().block_tokens();
      model.max_context_tokens = info.max_context_tokens();
      model.eos_token_ids.assign(info.eos_token_ids().begin(), info.eos_token_ids().end());
      known.model = std::move(model);
      LogInfo(StrCat("event=frontdoor_worker_known worker=", h->holder_id, " address=", h->address,
                     " model=", info.model_name()));
    } else {
      known.retry_after = absl::Now() + kInfoRetry;
      LogWarning(StrCat("error=worker_info_failed worker=", h->holder_id, " address=", h->address, " code=",
                        static_cast<int>(status.error_code()), " message=\"",
                        status.ok() ? "no 32-byte fingerprint" : status.error_message(), "\""));
    }
    absl::MutexLock lock(&mutex_);
    known_[h->holder_id] = std::move(known);
  }
  std::vector<WorkerModel> out;
  absl::MutexLock lock(&mutex_);
  for (const auto& [id, known] : known_) {
    if (known.model) out.push_back(*known.model);
  }
  return out;
}

std::vector<WorkerModel> WorkerDirectory::WorkersOf(const std::string& model_name) {
  std::vector<WorkerModel> out;
  for (WorkerModel& w : Refresh()) {
    if (w.model_name == model_name) out.push_back(std::move(w));
  }
  return out;
}

absl::flat_hash_map<std::string, int> WorkerDirectory::ModelCounts() {
  absl::flat_hash_map<std::string, int> counts;
  for (const WorkerModel& w : Refresh()) ++counts[w.model_name];
  return counts;
}

absl::StatusOr<std::unique_ptr<GenerationStream>> WorkerProxy::Start(const PreparedRequest& request,
                                                                     const std::string& tenant,
                                                                     const model::Tokenizer& tokenizer,
                                                                     absl::Time arrived, absl::Time caller_deadline) {
  std::vector<WorkerModel> workers = directory_->WorkersOf(request.model);
  if (workers.empty()) {
    // Name what the live workers do serve: a --served-model-name that differs between the scheduler and
    // its workers looks exactly like this.
    std::string others;
    for (const auto& [name, count] : directory_->ModelCounts()) {
      others += StrCat(others.empty() ? "" : ", ", "'", name, "' (", count, ")");
    }
    return ApiError(absl::StatusCode::kUnavailable,
                    StrCat("no live worker serves model '", request.model, "' right now (live workers serve: ",
                           others.empty() ? "nothing" : others, "); retry later"),
                    {}, {}, 503);
  }
  // Workers of one name normally share one fingerprint; during a rollout the one most workers serve wins.
  std::map<Sha256Digest, int> by_fingerprint;
  for (const WorkerModel& w : workers) ++by_fingerprint[w.fingerprint];
  const Sha256Digest fingerprint =
      std::max_element(by_fingerprint.begin(), by_fingerprint.end(),
                       [](const auto& a, const auto& b) { return a.second < b.second; })->first;
  const WorkerModel* any = nullptr;
  for (const WorkerModel& w : workers) {
    if (w.fingerprint == fingerprint) any = &w;
  }

  const proto::GenerateRequest generate = GenerateRequestOf(request, fingerprint, tenant);
  scheduler::TokenRoute route;
  route.model_fingerprint = fingerprint;
  route.token_ids = request.prompt_ids;
  route.tenant = tenant;
  route.cache_salt = request.cache_salt;
  absl::Status last_error;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    // A worker that cannot be reached (dead but within its lease) or is full: the cache-aware choice would
    // pick the same holder again, so the retries go round-robin (two in a row reach two different workers).
    if (attempt > 0) route.policy = scheduler::Policy::kRoundRobin;
    absl::StatusOr<scheduler::RouteResult> routed = scheduler_->Route(route);
    if (!routed.ok()) {
      return ApiError(absl::StatusCode::kUnavailable,
                      StrCat("no worker for model '", request.model, "': ", routed.status().message(), "; retry later"),
                      {}, {}, 503);
    }
    const Target target{routed->worker_id, routed->worker_address, routed->worker_epoch};
    grpc::Status status;
    absl::StatusOr<std::unique_ptr<GenerationStream>> stream =
        Open(target, generate, request, fingerprint, any->eos_token_ids, tokenizer, arrived, caller_deadline, status);
    if (stream.ok() || status.ok()) return stream;
    last_error = stream.status();
    const bool retryable = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                           status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
    if (!retryable) return last_error;
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
      directory_->ReportUnreachable(routed->worker_id, routed->worker_epoch);
    }
    LogWarning(StrCat("error=worker_unreachable worker=", routed->worker_id, " address=", routed->worker_address,
                      " attempt=", attempt + 1, " message=\"", status.error_message(), "\""));
  }
  return last_error;
}

absl::StatusOr<std::unique_ptr<GenerationStream>> WorkerProxy::StartBeside(
    const GenerationStream& sibling, const PreparedRequest& request, const std::string& tenant,
    const model::Tokenizer& tokenizer, absl::Time arrived, absl::Time caller_deadline) {
  const Target target{sibling.worker_id(), sibling.worker_address(), sibling.worker_epoch()};
  grpc::Status status;
  absl::StatusOr<std::unique_ptr<GenerationStream>> stream =
      Open(target, GenerateRequestOf(request, sibling.model_fingerprint(), tenant), request,
           sibling.model_fingerprint(), sibling.eos_token_ids_, tokenizer, arrived, caller_deadline, status);
  if (!stream.ok() && status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    directory_->ReportUnreachable(target.worker_id, target.epoch);
  }
  return stream;
}

absl::StatusOr<std::unique_ptr<GenerationStream>> WorkerProxy::Open(
    const Target& target, const proto::GenerateRequest& generate, const PreparedRequest& request,
    const Sha256Digest& fingerprint, const std::vector<int32_t>& eos_token_ids, const model::Tokenizer& tokenizer,
    absl::Time arrived, absl::Time caller_deadline, grpc::Status& worker_status) {
  auto stream = std::unique_ptr<GenerationStream>(new GenerationStream(tokenizer, request.stop));
  stream->usage_.cache_report = cache_report_;
  stream->usage_.worker_id = target.worker_id;
  stream->usage_.prompt_tokens = static_cast<uint32_t>(request.prompt_ids.size());
  stream->worker_address_ = target.address;
  stream->worker_epoch_ = target.epoch;
  stream->fingerprint_ = fingerprint;
  stream->eos_token_ids_ = eos_token_ids;
  if (request.prompt_logprobs) stream->prompt_ids_ = request.prompt_ids;
  for (int32_t id : request.stop_token_ids) stream->stop_ids_.insert(id);
  if (!request.ignore_eos) {
    for (int32_t id : eos_token_ids) stream->stop_ids_.insert(id);
  }
  stream->stub_ = directory_->Stub(target.address);
  // A caller that gives up sooner (its gRPC deadline) takes the worker's call with it: the worker frees
  // the request's batch slot and KV then, not at --request-timeout-s.
  SetDeadline(stream->context_,
              Millis(std::max(absl::ZeroDuration(), std::min(request_timeout_, caller_deadline - absl::Now()))));
  stream->reader_ = stream->stub_->Generate(&stream->context_, generate);
  proto::GenerateResponse first;
  if (stream->reader_->Read(&first)) {
    directory_->ReportReachable(target.worker_id, target.epoch);
    stream->usage_.ttft_s = absl::ToDoubleSeconds(absl::Now() - arrived);
    stream->first_ = std::move(first);
    return stream;
  }
  worker_status = stream->reader_->Finish();
  stream->reaped_ = true;
  stream->done_ = true;
  if (worker_status.ok()) {
    return ApiError(
        absl::StatusCode::kUnavailable,
        StrCat("worker ", target.worker_id, " (", target.address, ") ended the stream without output; retry"), {}, {},
        503);
  }
  return BeforeOutput(worker_status, target.worker_id, target.address);
}

GenerationStream::~GenerationStream() {
  if (!reaped_) {
    context_.TryCancel();
    (void)Reap();
  }
}

absl::Status GenerationStream::Reap() {
  if (reaped_) return absl::OkStatus();
  reaped_ = true;
  proto::GenerateResponse ignored;
  while (reader_->Read(&ignored)) {
  }
  return FromGrpcStatus(reader_->Finish());
}

std::vector<TokenLogprobs> GenerationStream::PromptLogprobsOf(const proto::GenerateResponse& message) {
  std::vector<TokenLogprobs> out;
  if (prompt_ids_.empty()) return out;
  // The worker's list starts at the prompt's second token; the first has no context.
  out.push_back({prompt_ids_[0], std::nullopt, {}});
  for (int i = 0; i < message.prompt_logprobs_size() && i + 1 < static_cast<int>(prompt_ids_.size()); ++i) {
    out.push_back(FromProto(prompt_ids_[i + 1], message.prompt_logprobs(i)));
  }
  prompt_ids_.clear();
  return out;
}

std::vector<TokenLogprobs> GenerationStream::TakePromptLogprobs() {
  if (!first_) return {};
  return PromptLogprobsOf(*first_);
}

absl::StatusOr<Piece> GenerationStream::Next() {
  if (done_) return absl::FailedPreconditionError("the stream has ended");
  proto::GenerateResponse message;
  if (first_) {
    message = std::move(*first_);
    first_.reset();
  } else if (!reader_->Read(&message)) {
    done_ = true;
    const absl::Status status = Reap();
    return ApiError(absl::StatusCode::kUnavailable,
                    StrCat("worker ", usage_.worker_id, " (", worker_address_, ") failed mid-stream after ",
                           usage_.completion_tokens, usage_.completion_tokens == 1 ? " token: " : " tokens: ",
                           status.ok() ? "the stream ended without its last message" : status.message()),
                    {}, {}, 502);
  }
  Piece piece;
  if (!prompt_ids_.empty()) piece.prompt_logprobs = PromptLogprobsOf(message);
  for (int i = 0; i < message.token_ids_size(); ++i) {
    if (text_.stopped()) break;
    const int32_t id = message.token_ids(i);
    ++usage_.completion_tokens;
    piece.token_ids.push_back(id);
    if (i < message.logprobs_size()) piece.logprobs.push_back(FromProto(id, message.logprobs(i)));
    if (!stop_ids_.contains(id)) piece.text += text_.Push(id);
  }
  if (text_.stopped()) {
    // A stop string: the rest is not wanted. The worker's own account never arrives, so the usage keeps
    // what is known (prompt, tokens received).
    done_ = true;
    context_.TryCancel();
    (void)Reap();
    piece.finished = true;
    piece.finish_reason = "stop";
    usage_.prefill_tokens = usage_.prompt_tokens - usage_.cached_tokens;
    piece.usage = usage_;
    return piece;
  }
  if (!message.finished()) return piece;
  done_ = true;
  piece.text += text_.Finish();
  piece.finished = true;
  piece.finish_reason = message.finish_reason() == proto::FINISH_REASON_STOP ? "stop" : "length";
  const proto::PrefixUsage& prefix = message.prefix();
  if (prefix.prompt_tokens() != 0) usage_.prompt_tokens = prefix.prompt_tokens();
  usage_.cached_tokens = prefix.cached_tokens();
  usage_.cached_tokens_gpu = prefix.cached_tokens_gpu();
  usage_.cached_tokens_host = prefix.cached_tokens_host();
  usage_.cached_tokens_kvstore = prefix.cached_tokens_kvstore();
  usage_.prefill_tokens = prefix.prefill_tokens();
  usage_.queue_s = message.queue_s();
  if (message.completion_tokens() != 0) usage_.completion_tokens = message.completion_tokens();
  piece.usage = usage_;
  (void)Reap();
  return piece;
}

}  // namespace strata::frontdoor
