#include "kvstore/service.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "absl/strings/str_join.h"
#include "common/block_key.h"
#include "common/grpc_security.h"
#include "common/rpc.h"
#include "common/status.h"
#include "common/strings.h"
#include "kvstore/ucx_server.h"

namespace strata::kvstore {
namespace {

class Timer {
 public:
  explicit Timer(Histogram& histogram) : histogram_(histogram), start_(std::chrono::steady_clock::now()) {}
  ~Timer() { histogram_.Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count()); }

 private:
  Histogram& histogram_;
  std::chrono::steady_clock::time_point start_;
};

proto::Tier ToProto(Tier tier) { return tier == Tier::kDram ? proto::TIER_KVSTORE_DRAM : proto::TIER_KVSTORE_SSD; }

absl::Status CheckBatch(int size, uint32_t max_batch, std::string_view what) {
  if (size == 0) return absl::InvalidArgumentError(StrCat(what, ": no keys"));
  if (static_cast<uint32_t>(size) > max_batch) {
    return absl::InvalidArgumentError(StrCat(what, ": ", size, " keys exceed --max-batch ", max_batch));
  }
  return absl::OkStatus();
}

absl::StatusOr<BlockKey> ParseKey(const std::string& bytes, int index, std::string_view field) {
  absl::StatusOr<BlockKey> key = BlockKeyFromBytes(bytes);
  if (!key.ok()) {
    return absl::InvalidArgumentError(StrCat(field, "[", index, "]: a block key is 16 bytes, got ", bytes.size()));
  }
  return key;
}

absl::StatusOr<std::vector<BlockKey>> ParseKeys(const google::protobuf::RepeatedPtrField<std::string>& keys,
                                                uint32_t max_batch, std::string_view what) {
  STRATA_RETURN_IF_ERROR(CheckBatch(keys.size(), max_batch, what));
  std::vector<BlockKey> out;
  out.reserve(keys.size());
  for (int i = 0; i < keys.size(); ++i) {
    STRATA_ASSIGN_OR_RETURN(BlockKey key, ParseKey(keys[i], i, "keys"));
    out.push_back(key);
  }
  return out;
}

void FillTier(const TierCounters& in, proto::Tier tier, proto::TierStats* out) {
  out->set_tier(tier);
  out->set_blocks(in.blocks);
  out->set_used_bytes(in.used_bytes);
  out->set_capacity_bytes(in.capacity_bytes);
  out->set_hits(in.hits);
  out->set_misses(in.misses);
  out->set_evictions(in.evictions);
  out->set_bytes_in(in.bytes_in);
  out->set_bytes_out(in.bytes_out);
}

}  // namespace

KvStoreService::KvStoreService(const Options& options, Store& store, DataPlane data_plane, MetricsRegistry& metrics)
    : options_(options), store_(store), data_plane_(std::move(data_plane)) {
  lookup_seconds_ = &Latency("lookup", metrics);
  begin_put_seconds_ = &Latency("begin_put", metrics);
  commit_put_seconds_ = &Latency("commit_put", metrics);
  begin_get_seconds_ = &Latency("begin_get", metrics);
  end_get_seconds_ = &Latency("end_get", metrics);
  delete_seconds_ = &Latency("delete", metrics);
  writes_refused_ = &metrics.AddCounter("strata_kvstore_writes_refused_total",
                                        "Puts and deletes refused: the caller's certificate is not a --writer-identity");
}

grpc::Status KvStoreService::AuthorizeWrite(const grpc::ServerContext& context, std::string_view op) {
  if (options_.writer_identities.empty()) return grpc::Status::OK;
  const std::string name = PeerCommonName(context);
  if (std::find(options_.writer_identities.begin(), options_.writer_identities.end(), name) !=
      options_.writer_identities.end()) {
    return grpc::Status::OK;
  }
  writes_refused_->Increment();
  if (uint64_t held_back = 0; write_refused_log_.Allow(&held_back)) {
    LogWarning(StrCat("error=kvstore_write_refused op=", op, " peer_cn=\"", name, "\" peer=", context.peer(),
                      " held_back=", held_back));
  }
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      StrCat(op, ": the caller's certificate (CN \"", name,
                             "\") may not write to this kvstore; writers: ", absl::StrJoin(options_.writer_identities, ",")));
}

Histogram& KvStoreService::Latency(const char* op, MetricsRegistry& metrics) {
  return metrics.AddHistogram("strata_kvstore_op_seconds", "Control-plane operation latency", LatencyBucketsSeconds(),
                              {{"op", op}});
}

namespace {

// The per-block registrations of one grant; the store ends them with the put or lease.
class BlockRkeys final : public Grant {
 public:
  std::vector<std::unique_ptr<UcxServer::BlockRkey>> rkeys;
};

}  // namespace

absl::StatusOr<std::vector<std::string>> KvStoreService::GrantRkeys(uint64_t id, absl::Span<const uint64_t> offsets,
                                                                    absl::Span<const uint64_t> bytes) {
  if (data_plane_.ucx == nullptr) return absl::FailedPreconditionError("--rkey-scope=grant needs the UCX data plane");
  auto grant = std::make_unique<BlockRkeys>();
  std::vector<std::string> packed;
  for (size_t i = 0; i < offsets.size(); ++i) {
    STRATA_ASSIGN_OR_RETURN(std::unique_ptr<UcxServer::BlockRkey> rkey,
                            data_plane_.ucx->RegisterBlock(offsets[i], bytes[i]));
    packed.push_back(rkey->packed());
    grant->rkeys.push_back(std::move(rkey));
  }
  STRATA_RETURN_IF_ERROR(store_.AttachGrant(id, std::move(grant)));
  return packed;
}

grpc::Status KvStoreService::Connect(grpc::ServerContext*, const proto::ConnectRequest*,
                                     proto::ConnectResponse* response) {
  CallGuard guard(in_flight_);
  response->set_worker_address(data_plane_.worker_address);
  if (options_.rkey_scope == RkeyScope::kArena) {  // else a client learns only the addresses it is granted
    response->set_arena_base(data_plane_.arena_base);
    response->set_arena_bytes(data_plane_.arena_bytes);
  }
  response->set_max_block_bytes(options_.max_block_bytes);
  response->set_lease_ttl_ms(options_.lease_ttl_ms);
  response->set_put_ttl_ms(options_.put_ttl_ms);
  response->set_max_batch(options_.max_batch);
  return grpc::Status::OK;
}

grpc::Status KvStoreService::Lookup(grpc::ServerContext*, const proto::LookupRequest* request,
                                    proto::LookupResponse* response) {
  CallGuard guard(in_flight_);
  Timer timer(*lookup_seconds_);
  absl::StatusOr<std::vector<BlockKey>> keys = ParseKeys(request->keys(), options_.max_batch, "Lookup");
  if (!keys.ok()) return ToGrpcStatus(keys.status());
  const std::vector<LookupSlot> slots = store_.Lookup(*keys);
  bool prefix = true;
  uint32_t prefix_length = 0;
  for (const LookupSlot& slot : slots) {
    proto::BlockInfo* info = response->add_blocks();
    info->set_present(slot.present);
    if (slot.present) {
      info->set_tier(ToProto(slot.tier));
      info->set_size_bytes(slot.size_bytes);
    }
    prefix = prefix && slot.present;
    if (prefix) ++prefix_length;
  }
  response->set_longest_present_prefix(prefix_length);
  return grpc::Status::OK;
}

grpc::Status KvStoreService::BeginPut(grpc::ServerContext* context, const proto::BeginPutRequest* request,
                                      proto::BeginPutResponse* response) {
  CallGuard guard(in_flight_);
  if (grpc::Status denied = AuthorizeWrite(*context, "BeginPut"); !denied.ok()) return denied;
  Timer timer(*begin_put_seconds_);
  if (absl::Status status = CheckBatch(request->items_size(), options_.max_batch, "BeginPut"); !status.ok()) {
    return ToGrpcStatus(status);
  }
  std::vector<PutItem> items;
  items.reserve(request->items_size());
  for (int i = 0; i < request->items_size(); ++i) {
    const proto::PutItem& item = request->items(i);
    absl::StatusOr<BlockKey> key = ParseKey(item.key(), i, "items.key");
    if (!key.ok()) return ToGrpcStatus(key.status());
    PutItem parsed{*key, item.size_bytes(), std::nullopt};
    if (!item.parent_key().empty()) {
      absl::StatusOr<BlockKey> parent = ParseKey(item.parent_key(), i, "items.parent_key");
      if (!parent.ok()) return ToGrpcStatus(parent.status());
      if (*parent == *key) {
        return ToGrpcStatus(absl::InvalidArgumentError(StrCat("items[", i, "]: a block cannot be its own parent")));
      }
      parsed.parent = *parent;
    }
    items.push_back(parsed);
  }
  // The quota is per connection: gRPC's peer is the client's address and port.
  absl::StatusOr<PutReservation> reservation = store_.BeginPut(items, context->peer());
  if (!reservation.ok()) return ToGrpcStatus(reservation.status());
  if (reservation->put_id == 0) {  // nothing reserved: the reply tells nothing of the data plane
    for (size_t i = 0; i < items.size(); ++i) response->add_slots()->set_reserved(false);
    return grpc::Status::OK;
  }
  std::vector<std::string> block_rkeys;
  if (options_.rkey_scope == RkeyScope::kGrant) {
    std::vector<uint64_t> offsets, bytes;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!reservation->offsets[i]) continue;
      offsets.push_back(*reservation->offsets[i]);
      bytes.push_back(items[i].size_bytes);
    }
    absl::StatusOr<std::vector<std::string>> rkeys = GrantRkeys(reservation->put_id, offsets, bytes);
    if (!rkeys.ok()) {
      store_.AbortPut(reservation->put_id).IgnoreError();  // NotFound when it expired meanwhile
      return ToGrpcStatus(absl::UnavailableError(StrCat("BeginPut: ", rkeys.status().message())));
    }
    block_rkeys = *std::move(rkeys);
  } else {
    response->set_rkey(data_plane_.rkey);
  }
  response->set_put_id(reservation->put_id);
  size_t reserved = 0;
  for (const std::optional<uint64_t>& offset : reservation->offsets) {
    proto::PutSlot* slot = response->add_slots();
    slot->set_reserved(offset.has_value());
    if (!offset) continue;
    slot->set_remote_address(data_plane_.arena_base + *offset);
    if (!block_rkeys.empty()) slot->set_rkey(std::move(block_rkeys[reserved++]));
  }
  return grpc::Status::OK;
}

grpc::Status KvStoreService::CommitPut(grpc::ServerContext* context, const proto::CommitPutRequest* request,
                                       proto::CommitPutResponse*) {
  CallGuard guard(in_flight_);
  if (grpc::Status denied = AuthorizeWrite(*context, "CommitPut"); !denied.ok()) return denied;
  Timer timer(*commit_put_seconds_);
  const auto& checksums = request->checksums();
  return ToGrpcStatus(store_.CommitPut(request->put_id(), absl::MakeConstSpan(checksums.data(), checksums.size())));
}

grpc::Status KvStoreService::AbortPut(grpc::ServerContext* context, const proto::AbortPutRequest* request,
                                      proto::AbortPutResponse*) {
  CallGuard guard(in_flight_);
  if (grpc::Status denied = AuthorizeWrite(*context, "AbortPut"); !denied.ok()) return denied;
  return ToGrpcStatus(store_.AbortPut(request->put_id()));
}

grpc::Status KvStoreService::BeginGet(grpc::ServerContext* context, const proto::BeginGetRequest* request,
                                      proto::BeginGetResponse* response) {
  CallGuard guard(in_flight_);
  Timer timer(*begin_get_seconds_);
  absl::StatusOr<std::vector<BlockKey>> keys = ParseKeys(request->keys(), options_.max_batch, "BeginGet");
  if (!keys.ok()) return ToGrpcStatus(keys.status());
  absl::StatusOr<GetLease> lease = store_.BeginGet(*keys, context->peer());
  if (!lease.ok()) return ToGrpcStatus(lease.status());
  std::vector<std::string> block_rkeys;
  if (lease->lease_id != 0 && options_.rkey_scope == RkeyScope::kGrant) {
    std::vector<uint64_t> offsets, bytes;
    for (const GetSlot& slot : lease->slots) {
      if (!slot.present) continue;
      offsets.push_back(slot.offset);
      bytes.push_back(slot.size_bytes);
    }
    absl::StatusOr<std::vector<std::string>> rkeys = GrantRkeys(lease->lease_id, offsets, bytes);
    if (!rkeys.ok()) {
      store_.EndGet(lease->lease_id).IgnoreError();  // NotFound when it expired meanwhile
      return ToGrpcStatus(absl::UnavailableError(StrCat("BeginGet: ", rkeys.status().message())));
    }
    block_rkeys = *std::move(rkeys);
  } else if (lease->lease_id != 0) {
    response->set_rkey(data_plane_.rkey);
  }
  response->set_lease_id(lease->lease_id);
  response->set_lease_ttl_ms(options_.lease_ttl_ms);
  size_t present = 0;
  for (const GetSlot& slot : lease->slots) {
    proto::GetSlot* out = response->add_slots();
    out->set_present(slot.present);
    if (!slot.present) continue;
    out->set_tier(ToProto(slot.tier));
    out->set_size_bytes(slot.size_bytes);
    out->set_remote_address(data_plane_.arena_base + slot.offset);
    out->set_checksum(slot.checksum);
    if (!block_rkeys.empty()) out->set_rkey(std::move(block_rkeys[present++]));
  }
  return grpc::Status::OK;
}

grpc::Status KvStoreService::RenewLease(grpc::ServerContext*, const proto::RenewLeaseRequest* request,
                                        proto::RenewLeaseResponse*) {
  CallGuard guard(in_flight_);
  return ToGrpcStatus(store_.RenewLease(request->lease_id()));
}

grpc::Status KvStoreService::EndGet(grpc::ServerContext*, const proto::EndGetRequest* request, proto::EndGetResponse*) {
  CallGuard guard(in_flight_);
  Timer timer(*end_get_seconds_);
  return ToGrpcStatus(store_.EndGet(request->lease_id()));
}

grpc::Status KvStoreService::Delete(grpc::ServerContext* context, const proto::DeleteRequest* request,
                                    proto::DeleteResponse* response) {
  CallGuard guard(in_flight_);
  if (grpc::Status denied = AuthorizeWrite(*context, "Delete"); !denied.ok()) return denied;
  Timer timer(*delete_seconds_);
  absl::StatusOr<std::vector<BlockKey>> keys = ParseKeys(request->keys(), options_.max_batch, "Delete");
  if (!keys.ok()) return ToGrpcStatus(keys.status());
  response->set_deleted(store_.Delete(*keys));
  return grpc::Status::OK;
}

grpc::Status KvStoreService::Stats(grpc::ServerContext*, const proto::StatsRequest*, proto::StatsResponse* response) {
  CallGuard guard(in_flight_);
  const StoreStats stats = store_.Stats();
  FillTier(stats.dram, proto::TIER_KVSTORE_DRAM, response->add_tiers());
  if (!options_.ssd_dir.empty()) FillTier(stats.ssd, proto::TIER_KVSTORE_SSD, response->add_tiers());
  response->set_arena_allocated_bytes(stats.arena_allocated_bytes);
  response->set_reserved_bytes(stats.reserved_bytes);
  response->set_pinned_bytes(stats.pinned_bytes);
  response->set_open_leases(stats.open_leases);
  response->set_open_puts(stats.open_puts);
  response->set_checksum_failures(stats.checksum_failures);
  response->set_expired_leases(stats.expired_leases);
  response->set_expired_puts(stats.expired_puts);
  response->set_eviction_policy(EvictionPolicyName(options_.eviction));
  return grpc::Status::OK;
}

}  // namespace strata::kvstore
