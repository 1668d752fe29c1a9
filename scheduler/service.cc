#include "scheduler/service.h"

#include <chrono>
#include <cstring>

#include "common/grpc_security.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/status.h"
#include "common/strings.h"

namespace strata::scheduler {
namespace {

constexpr int kMaxMessageBytes = 64 << 20;

absl::StatusOr<Tier> TierFromProto(proto::Tier tier) {
  switch (tier) {
    case proto::TIER_GPU:
      return Tier::kGpu;
    case proto::TIER_HOST:
      return Tier::kHost;
    case proto::TIER_KVSTORE_DRAM:
      return Tier::kKvstoreDram;
    case proto::TIER_KVSTORE_SSD:
      return Tier::kKvstoreSsd;
    default:
      return absl::InvalidArgumentError(StrCat("tier ", static_cast<int>(tier), " is not a block tier"));
  }
}

proto::HolderKind KindToProto(HolderKind kind) {
  return kind == HolderKind::kWorker ? proto::HOLDER_KIND_WORKER : proto::HOLDER_KIND_KVSTORE;
}

std::optional<Policy> PolicyFromProto(proto::Policy policy) {
  switch (policy) {
    case proto::POLICY_ROUND_ROBIN:
      return Policy::kRoundRobin;
    case proto::POLICY_LEAST_LOADED:
      return Policy::kLeastLoaded;
    case proto::POLICY_CACHE_AWARE:
      return Policy::kCacheAware;
    default:
      return std::nullopt;
  }
}

proto::Policy PolicyToProto(Policy policy) {
  switch (policy) {
    case Policy::kRoundRobin:
      return proto::POLICY_ROUND_ROBIN;
    case Policy::kLeastLoaded:
      return proto::POLICY_LEAST_LOADED;
    case Policy::kCacheAware:
      return proto::POLICY_CACHE_AWARE;
  }
  return proto::POLICY_UNSPECIFIED;
}

absl::StatusOr<Sha256Digest> FingerprintFromBytes(const std::string& bytes, std::string_view where) {
  Sha256Digest digest{};
  if (bytes.size() != digest.size()) {
    return absl::InvalidArgumentError(
        StrCat(where, ": model_fingerprint has ", bytes.size(), " bytes; a fingerprint is 32 (SHA-256)"));
  }
  std::memcpy(digest.data(), bytes.data(), digest.size());
  return digest;
}

LoadReport LoadFromProto(const proto::LoadReport& load) {
  LoadReport out;
  out.queued_prefill_tokens = load.queued_prefill_tokens();
  out.running_tokens = load.running_tokens();
  out.running_requests = load.running_requests();
  out.queue_wait_s = load.queue_wait_s();
  return out;
}

}  // namespace

absl::StatusOr<Registration> RegistrationFromProto(const proto::RegisterRequest& request) {
  Registration r;
  r.holder_id = request.holder_id();
  r.incarnation = request.incarnation();
  if (request.kind() == proto::HOLDER_KIND_WORKER) r.kind = HolderKind::kWorker;
  if (request.kind() == proto::HOLDER_KIND_KVSTORE) r.kind = HolderKind::kKvstore;
  r.scheme_version = request.key_scheme().version();
  r.address = request.address();
  if (r.kind == HolderKind::kWorker) {
    const std::string where = StrCat("register ", r.holder_id.substr(0, 64));
    STRATA_ASSIGN_OR_RETURN(r.key_context.model_fingerprint,
                            FingerprintFromBytes(request.key_scheme().model_fingerprint(), where));
    r.key_context.block_tokens = request.key_scheme().block_tokens();
    std::optional<DType> dtype = DTypeFromName(request.key_scheme().kv_dtype());
    if (!dtype.has_value()) {
      return absl::InvalidArgumentError(
          StrCat(where, ": kv_dtype '", request.key_scheme().kv_dtype().substr(0, 16), "' is not F32, F16 or BF16"));
    }
    r.key_context.kv_dtype = *dtype;
    const proto::WorkerInfo& w = request.worker();
    r.worker.gpu_kv_blocks = w.gpu_kv_blocks();
    r.worker.host_kv_blocks = w.host_kv_blocks();
    r.worker.block_bytes = w.block_bytes();
    r.worker.prefill_linear_s_per_token = w.prefill_linear_s_per_token();
    r.worker.prefill_quadratic_s_per_token2 = w.prefill_quadratic_s_per_token2();
    r.worker.host_to_gpu_bytes_per_s = w.host_to_gpu_bytes_per_s();
    r.worker.network_bytes_per_s = w.network_bytes_per_s();
    r.worker.decode_tokens_per_s = w.decode_tokens_per_s();
    r.worker.model_name = w.model_name();
    r.worker.kvstores.assign(w.kvstores().begin(), w.kvstores().end());
  }
  r.kvstore.dram_blocks = request.kvstore().dram_blocks();
  r.kvstore.ssd_blocks = request.kvstore().ssd_blocks();
  r.kvstore.ssd_read_bytes_per_s = request.kvstore().ssd_read_bytes_per_s();
  return r;
}

grpc::Status SchedulerService::Register(grpc::ServerContext*, const proto::RegisterRequest* request,
                                        proto::RegisterResponse* response) {
  absl::StatusOr<Registration> registration = RegistrationFromProto(*request);
  if (!registration.ok()) return ToGrpcStatus(registration.status());
  absl::StatusOr<RegisterResult> result = scheduler_->Register(*std::move(registration));
  if (!result.ok()) return ToGrpcStatus(result.status());
  response->set_epoch(result->epoch);
  response->set_lease_ms(static_cast<uint64_t>(absl::ToInt64Milliseconds(options_.lease)));
  response->set_heartbeat_interval_ms(static_cast<uint64_t>(absl::ToInt64Milliseconds(options_.heartbeat_interval)));
  response->set_send_inventory(true);
  return grpc::Status::OK;
}

grpc::Status SchedulerService::Heartbeat(grpc::ServerContext*, const proto::HeartbeatRequest* request,
                                         proto::HeartbeatResponse* response) {
  std::optional<LoadReport> load;
  if (request->has_load()) load = LoadFromProto(request->load());
  absl::StatusOr<HeartbeatResult> result =
      scheduler_->Heartbeat(request->holder_id(), request->epoch(), load, request->last_event_sequence());
  if (!result.ok()) return ToGrpcStatus(result.status());
  response->set_lease_ms(static_cast<uint64_t>(absl::ToInt64Milliseconds(options_.lease)));
  response->set_resync_required(result->resync_required);
  return grpc::Status::OK;
}

grpc::Status SchedulerService::Deregister(grpc::ServerContext*, const proto::DeregisterRequest* request,
                                          proto::DeregisterResponse*) {
  return ToGrpcStatus(scheduler_->Deregister(request->holder_id(), request->epoch()));
}

grpc::Status SchedulerService::KvEvents(grpc::ServerContext*,
                                        grpc::ServerReaderWriter<proto::KvEventReply, proto::KvEventMessage>* stream) {
  proto::KvEventMessage message;
  std::string holder_id;
  uint64_t epoch = 0;
  bool first = true;
  while (stream->Read(&message)) {
    if (first) {
      holder_id = message.holder_id();
      epoch = message.epoch();
      first = false;
    } else if (message.holder_id() != holder_id || message.epoch() != epoch) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          StrCat("KvEvents: a stream carries one holder's events; it began with ", holder_id, " epoch ", epoch,
                 " and now names ", message.holder_id().substr(0, 64), " epoch ", message.epoch())));
    }
    const std::string where = StrCat("KvEvents ", holder_id.substr(0, 64));
    Inventory inventory;
    if (message.has_inventory()) {
      inventory.sequence = message.inventory().sequence();
      inventory.chunk.continues = message.inventory().continues();
      inventory.chunk.more_follow = message.inventory().more_follow();
      for (const proto::TierBlocks& tier_blocks : message.inventory().tiers()) {
        absl::StatusOr<Tier> tier = TierFromProto(tier_blocks.tier());
        absl::StatusOr<std::vector<BlockKey>> keys = UnpackKeys(tier_blocks.keys());
        if (!tier.ok() || !keys.ok()) {
          return ToGrpcStatus(absl::InvalidArgumentError(
              StrCat(where, ": inventory: ", !tier.ok() ? tier.status().message() : keys.status().message())));
        }
        inventory.tiers.emplace_back(*tier, *std::move(keys));
      }
    }
    std::vector<KvEventIn> events;
    events.reserve(message.events_size());
    for (const proto::KvEvent& event : message.events()) {
      KvEventIn in;
      in.sequence = event.sequence();
      if (event.type() == proto::KvEvent::TYPE_STORED) {
        in.type = EventType::kStored;
        absl::StatusOr<Tier> tier = TierFromProto(event.tier());
        if (!tier.ok()) {
          return ToGrpcStatus(absl::InvalidArgumentError(
              StrCat(where, ": event ", event.sequence(), ": STORED needs a tier: ", tier.status().message())));
        }
        in.tier = *tier;
      } else if (event.type() == proto::KvEvent::TYPE_EVICTED) {
        in.type = EventType::kEvicted;
      } else {
        return ToGrpcStatus(absl::InvalidArgumentError(
            StrCat(where, ": event ", event.sequence(), " has no type (STORED or EVICTED)")));
      }
      absl::StatusOr<std::vector<BlockKey>> keys = UnpackKeys(event.keys());
      if (!keys.ok()) {
        return ToGrpcStatus(
            absl::InvalidArgumentError(StrCat(where, ": event ", event.sequence(), ": ", keys.status().message())));
      }
      in.keys = *std::move(keys);
      events.push_back(std::move(in));
    }
    absl::StatusOr<EventsResult> result =
        scheduler_->ApplyEvents(holder_id, epoch, message.has_inventory() ? &inventory : nullptr, events);
    if (!result.ok()) return ToGrpcStatus(result.status());
    proto::KvEventReply reply;
    reply.set_applied_sequence(result->applied_sequence);
    reply.set_resync_required(result->resync_required);
    if (result->resync_required) reply.set_reason("sequence gap: send an inventory");
    if (!stream->Write(reply)) break;
  }
  return grpc::Status::OK;
}

grpc::Status SchedulerService::Route(grpc::ServerContext*, const proto::RouteRequest* request,
                                     proto::RouteResponse* response) {
  absl::StatusOr<Sha256Digest> fingerprint = FingerprintFromBytes(request->model_fingerprint(), "route");
  if (!fingerprint.ok()) return ToGrpcStatus(fingerprint.status());
  absl::StatusOr<RouteResult> result;
  if (request->token_ids_size() > 0 && !request->block_keys().empty()) {
    return ToGrpcStatus(absl::InvalidArgumentError("route: give token_ids or block_keys, not both"));
  }
  if (request->token_ids_size() > 0) {
    TokenRoute route;
    route.model_fingerprint = *fingerprint;
    route.token_ids.assign(request->token_ids().begin(), request->token_ids().end());
    route.tenant = request->tenant();
    route.cache_salt = request->cache_salt();
    route.policy = PolicyFromProto(request->policy());
    result = scheduler_->Route(route);
  } else {
    if (request->prompt_tokens() == 0) {
      return ToGrpcStatus(absl::InvalidArgumentError("route: give token_ids, or block_keys with prompt_tokens > 0"));
    }
    absl::StatusOr<std::vector<BlockKey>> keys = UnpackKeys(request->block_keys());
    if (!keys.ok()) return ToGrpcStatus(keys.status());
    KeyRoute route;
    route.model_fingerprint = *fingerprint;
    route.keys = *std::move(keys);
    route.prompt_tokens = request->prompt_tokens();
    route.policy = PolicyFromProto(request->policy());
    result = scheduler_->Route(route);
  }
  if (!result.ok()) return ToGrpcStatus(result.status());
  const Estimate& e = result->decision.chosen;
  response->set_worker_id(result->worker_id);
  response->set_worker_address(result->worker_address);
  response->set_policy(PolicyToProto(result->decision.policy));
  response->set_estimated_ttft_s(e.ttft_s);
  response->set_queue_wait_s(e.queue_s);
  response->set_fetch_s(e.fetch_s);
  response->set_prefill_s(e.prefill_s);
  response->set_prompt_blocks(result->decision.prompt_blocks);
  response->set_blocks_gpu(e.blocks_by_tier[static_cast<int>(Tier::kGpu)]);
  response->set_blocks_host(e.blocks_by_tier[static_cast<int>(Tier::kHost)]);
  response->set_blocks_kvstore_dram(e.blocks_by_tier[static_cast<int>(Tier::kKvstoreDram)]);
  response->set_blocks_kvstore_ssd(e.blocks_by_tier[static_cast<int>(Tier::kKvstoreSsd)]);
  response->set_prefill_tokens(e.prefill_tokens);
  return grpc::Status::OK;
}

grpc::Status SchedulerService::ListHolders(grpc::ServerContext*, const proto::ListHoldersRequest*,
                                           proto::ListHoldersResponse* response) {
  for (const HolderSnapshot& s : scheduler_->Holders()) {
    proto::HolderStatus* h = response->add_holders();
    h->set_holder_id(s.holder_id);
    h->set_kind(KindToProto(s.kind));
    h->set_address(s.address);
    h->set_epoch(s.epoch);
    h->set_lease_remaining_s(s.lease_remaining_s);
    h->mutable_load()->set_queued_prefill_tokens(s.load.queued_prefill_tokens);
    h->mutable_load()->set_running_tokens(s.load.running_tokens);
    h->mutable_load()->set_running_requests(s.load.running_requests);
    h->mutable_load()->set_queue_wait_s(s.load.queue_wait_s);
    h->set_blocks(s.blocks);
    h->set_applied_sequence(s.applied_sequence);
    h->set_resync_pending(s.resync_pending);
    h->set_seconds_since_kv_event(s.seconds_since_kv_event);
  }
  response->set_index_blocks(scheduler_->IndexBlocks());
  response->set_index_capacity_blocks(scheduler_->IndexCapacityBlocks());
  return grpc::Status::OK;
}

absl::StatusOr<std::unique_ptr<SchedulerServer>> SchedulerServer::Start(const Options& options) {
  std::unique_ptr<SchedulerServer> server(new SchedulerServer());
  server->options_ = options;
  server->scheduler_ = std::make_unique<Scheduler>(options, &server->clock_, &server->metrics_);
  server->service_ = std::make_unique<SchedulerService>(server->scheduler_.get());
  server->service_->set_options(options);
  STRATA_ASSIGN_OR_RETURN(std::shared_ptr<const RpcSecurity> security, RpcSecurity::Load(options.security));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.grpc_address, security->ServerCredentials(), &server->grpc_port_);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);  // inventory chunks
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a second scheduler on this port is an error
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->grpc_port_ == 0) {
    return absl::UnavailableError(
        StrCat("scheduler: cannot listen for gRPC on ", options.grpc_address, " (address in use or not local?)"));
  }
  SchedulerServer* raw = server.get();
  STRATA_ASSIGN_OR_RETURN(server->metrics_http_,
                          MetricsHttpServer::Start(options.metrics_host, options.metrics_port, server->metrics_,
                                                   [raw] { return raw->serving_.load(); }));
  if (options.health_port >= 0) {
    STRATA_ASSIGN_OR_RETURN(server->health_port_, HealthPortServer::Start(options.grpc_address, options.health_port));
  }
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  server->serving_ = true;
  server->reaper_ = std::thread([raw] {
    while (!raw->stop_.WaitForNotificationWithTimeout(absl::Milliseconds(250))) {
      raw->scheduler_->ExpireLeases();
      raw->scheduler_->CheckSilence();
    }
  });
  LogInfo(StrCat("event=scheduler_started grpc_port=", server->grpc_port_,
                 " metrics_port=", server->metrics_http_->port(), " policy=", PolicyName(options.default_policy),
                 " lease_ms=", absl::ToInt64Milliseconds(options.lease), " security=", security->Describe(),
                 " health_port=", server->health_port(),
                 " index_capacity_blocks=", options.index_capacity_blocks));
  return server;
}

void SchedulerServer::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&shutdown_mutex_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  serving_ = false;
  server_->GetHealthCheckService()->SetServingStatus(false);
  if (health_port_ != nullptr) health_port_->SetServing(false);
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(absl::ToInt64Milliseconds(grace)));
  stop_.Notify();
  if (reaper_.joinable()) reaper_.join();
  LogInfo("event=scheduler_stopped");
}

SchedulerServer::~SchedulerServer() {
  if (server_ != nullptr) Shutdown(absl::ZeroDuration());
  metrics_http_.reset();
}

}  // namespace strata::scheduler
