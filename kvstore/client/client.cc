#include "kvstore/client/client.h"

#include <sys/mman.h>

#include <algorithm>
#include <deque>

#include <grpcpp/support/client_callback.h>

#include "common/log.h"
#include "common/rpc.h"
#include "common/status.h"
#include "common/strings.h"
#include "kvstore/checksum.h"
#include "kvstore/ucx_status.h"

namespace strata::kvstore {
namespace {

// How long a closed endpoint's requests get to complete before they are given up.
constexpr std::chrono::milliseconds kGiveUpAfter(1000);

// A get of a block larger than this (with verify_reads) is read and hashed this much at a time, so that
// each chunk is hashed while still in cache (L2 here is 2 MiB per core).
// Measured on the dev VM (shared memory, 32 MiB blocks, one client): 2 MiB chunks 4.9-5.3 GB/s, 1 MiB
// 5.0, 4 MiB 3.3, whole block (hashed afterwards) 3.2-4.1.
constexpr uint64_t kChunkBytes = uint64_t{2} << 20;

void OnEndpointError(void* arg, ucp_ep_h, ucs_status_t status) {
  *static_cast<bool*>(arg) = true;
  LogWarning(StrCat("event=kvstore_endpoint_failed status=", ucs_status_string(status)));
}

}  // namespace

KvStoreClient::KvStoreClient(const ClientOptions& options)
    : options_(options), batch_keys_(std::max<uint32_t>(1, options.max_batch_keys)) {}

absl::StatusOr<std::unique_ptr<KvStoreClient>> KvStoreClient::Connect(const ClientOptions& options) {
  if (options.address.empty()) return absl::InvalidArgumentError("kvstore client: no address");
  std::unique_ptr<KvStoreClient> client(new KvStoreClient(options));
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(64 << 20);
  // A daemon that died is tried again within half a second (gRPC's default backoff grows to 2 minutes):
  // one restarted on the same address serves again as soon as it is up.
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  client->stub_ = proto::KvStore::NewStub(options.security->CreateChannel(options.address, arguments));
  ucp_config_t* config = nullptr;
  STRATA_UCX_RETURN_IF_ERROR(ucp_config_read(nullptr, nullptr, &config));
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_RMA;
  const ucs_status_t init = ucp_init(&params, config, &client->context_);
  ucp_config_release(config);
  STRATA_UCX_RETURN_IF_ERROR(init);
  ucp_worker_params_t worker_params{};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  worker_params.thread_mode = UCS_THREAD_MODE_SERIALIZED;  // guarded by ucx_mutex_
  absl::MutexLock lock(&client->ucx_mutex_);
  STRATA_UCX_RETURN_IF_ERROR(ucp_worker_create(client->context_, &worker_params, &client->worker_));
  STRATA_RETURN_IF_ERROR(client->EnsureConnected());
  return client;
}

KvStoreClient::~KvStoreClient() {
  AwaitEndGets();
  absl::MutexLock lock(&ucx_mutex_);
  Disconnect();
  for (const Region& region : regions_) ucp_mem_unmap(context_, region.memh);
  if (worker_ != nullptr) ucp_worker_destroy(worker_);
  if (context_ != nullptr) ucp_cleanup(context_);
}

absl::Status KvStoreClient::EnsureConnected() {
  if (ep_ != nullptr && !ep_failed_) return absl::OkStatus();
  Disconnect();
  if (worker_ == nullptr) return absl::UnavailableError("kvstore client: no UCX worker (see the log)");
  grpc::ClientContext context;
  SetDeadline(context, options_.rpc_timeout);
  proto::ConnectResponse response;
  STRATA_RETURN_IF_ERROR(FromGrpcStatus(stub_->Connect(&context, proto::ConnectRequest(), &response)));
  arena_base_ = response.arena_base();
  arena_bytes_ = response.arena_bytes();
  if (response.max_batch() > 0) batch_keys_ = std::min(batch_keys_.load(), response.max_batch());
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  params.address = reinterpret_cast<const ucp_address_t*>(response.worker_address().data());
  params.err_mode = UCP_ERR_HANDLING_MODE_NONE;
  if (options_.peer_failure == PeerFailure::kDetect) {
    params.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.err_mode = UCP_ERR_HANDLING_MODE_PEER;  // a dead daemon fails requests instead of hanging them
    params.err_handler.cb = OnEndpointError;
    params.err_handler.arg = &ep_failed_;
  }
  ep_failed_ = false;
  STRATA_RETURN_IF_ERROR(
      FromUcsStatus(ucp_ep_create(worker_, &params, &ep_), StrCat("ucp_ep_create to kvstore ", options_.address)));
  ++connection_;
  return absl::OkStatus();
}

void KvStoreClient::Disconnect() {
  DropBlockRkeys();
  if (rkey_ != nullptr) ucp_rkey_destroy(rkey_);
  rkey_ = nullptr;
  rkey_packed_.clear();
  if (ep_ == nullptr) return;
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = UCP_EP_CLOSE_FLAG_FORCE;  // every transfer on it has completed, failed or been given up
  void* request = ucp_ep_close_nbx(ep_, &param);
  ep_ = nullptr;
  if (!UCS_PTR_IS_PTR(request)) return;
  std::vector<void*> close = {request};
  if (!ProgressUntilDone(close, kGiveUpAfter)) ReplaceWorker();
}

bool KvStoreClient::ProgressUntilDone(std::vector<void*>& requests, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    bool pending = false;
    for (void*& request : requests) {
      if (request == nullptr) continue;
      if (ucp_request_check_status(request) == UCS_INPROGRESS) {
        pending = true;
        continue;
      }
      ucp_request_free(request);
      request = nullptr;
    }
    if (!pending) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    ucp_worker_progress(worker_);
  }
}

void KvStoreClient::ReplaceWorker() {
  // Without peer error handling UCX may never complete requests to a dead peer; the worker that owns
  // them goes, with them. Registered memory belongs to the context and stays valid.
  LogWarning("event=kvstore_worker_replaced reason=requests_to_dead_peer_never_completed");
  DropBlockRkeys();
  if (rkey_ != nullptr) ucp_rkey_destroy(rkey_);
  rkey_ = nullptr;
  rkey_packed_.clear();
  ep_ = nullptr;
  ucp_worker_destroy(worker_);
  worker_ = nullptr;
  ucp_worker_params_t worker_params{};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  worker_params.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  const ucs_status_t status = ucp_worker_create(context_, &worker_params, &worker_);
  if (status != UCS_OK) {
    worker_ = nullptr;  // EnsureConnected reports it
    LogError(StrCat("error=ucp_worker_create status=", ucs_status_string(status)));
  }
}

absl::StatusOr<ucp_rkey_h> KvStoreClient::Rkey(const std::string& packed) {
  if (rkey_ != nullptr && packed == rkey_packed_) return rkey_;
  if (rkey_ != nullptr) ucp_rkey_destroy(rkey_);
  rkey_ = nullptr;
  STRATA_UCX_RETURN_IF_ERROR(ucp_ep_rkey_unpack(ep_, packed.data(), &rkey_));
  rkey_packed_ = packed;
  // On one host the arena is a shared-memory segment that UCX maps into this process; fault the mapping
  // in once, so that transfers do not pay a page fault per 4 KiB on first touch.
  void* local = nullptr;
  if (arena_bytes_ > 0 && ucp_rkey_ptr(rkey_, arena_base_, &local) == UCS_OK) {
    madvise(local, arena_bytes_, MADV_POPULATE_WRITE);
  }
  return rkey_;
}

absl::StatusOr<ucp_rkey_h> KvStoreClient::SlotRkey(const std::string& grant_rkey, const std::string& block_rkey) {
  if (block_rkey.empty()) return Rkey(grant_rkey);
  ucp_rkey_h rkey = nullptr;
  STRATA_UCX_RETURN_IF_ERROR(ucp_ep_rkey_unpack(ep_, block_rkey.data(), &rkey));
  block_rkeys_.push_back(rkey);
  return rkey;
}

void KvStoreClient::DropBlockRkeys() {
  for (ucp_rkey_h rkey : block_rkeys_) ucp_rkey_destroy(rkey);
  block_rkeys_.clear();
}

absl::Status KvStoreClient::RegisterMemory(void* data, uint64_t bytes) {
  if (data == nullptr || bytes == 0) return absl::InvalidArgumentError("RegisterMemory: empty region");
  absl::MutexLock lock(&ucx_mutex_);
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  params.address = data;
  params.length = bytes;
  ucp_mem_h memh = nullptr;
  STRATA_UCX_RETURN_IF_ERROR(ucp_mem_map(context_, &params, &memh));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data);
  regions_.push_back({begin, begin + bytes, memh});
  return absl::OkStatus();
}

absl::Status KvStoreClient::UnregisterMemory(void* data) {
  absl::MutexLock lock(&ucx_mutex_);
  auto it = std::find_if(regions_.begin(), regions_.end(),
                         [&](const Region& region) { return region.begin == reinterpret_cast<uintptr_t>(data); });
  if (it == regions_.end()) return absl::NotFoundError("UnregisterMemory: not a registered region");
  ucp_mem_unmap(context_, it->memh);
  regions_.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<ucp_mem_h> KvStoreClient::FindMemh(const void* data, uint64_t bytes) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data);
  for (const Region& region : regions_) {
    if (begin >= region.begin && begin + bytes <= region.end) return region.memh;
  }
  return absl::InvalidArgumentError(
      StrCat("buffer at ", begin, " (", bytes, " bytes) is not inside memory registered with RegisterMemory"));
}

absl::Status KvStoreClient::WaitAll(std::vector<void*>& requests, uint64_t lease_id, uint32_t lease_ttl_ms,
                                    TransferClock* clock) {
  TransferClock local;
  if (clock == nullptr) {
    local.start = local.renewed = std::chrono::steady_clock::now();
    clock = &local;
  }
  const auto start = clock->start;
  auto& renewed = clock->renewed;
  const auto renew_every = std::chrono::milliseconds(std::max<uint32_t>(1, lease_ttl_ms / 3));
  absl::Status status = absl::OkStatus();
  size_t done = 0;
  while (done < requests.size()) {
    ucp_worker_progress(worker_);
    done = 0;
    for (void*& request : requests) {
      if (request == nullptr) {
        ++done;
        continue;
      }
      const ucs_status_t state = ucp_request_check_status(request);
      if (state == UCS_INPROGRESS) continue;
      if (state != UCS_OK && status.ok()) status = FromUcsStatus(state, "kvstore RMA transfer");
      ucp_request_free(request);
      request = nullptr;
      ++done;
    }
    if (done == requests.size()) break;
    const auto now = std::chrono::steady_clock::now();
    if (now - start > options_.transfer_timeout) {
      // Closing the endpoint fails the outstanding requests where UCX can; where it cannot (a dead peer
      // without error handling), they are given up with the worker.
      ep_failed_ = true;
      Disconnect();
      if (worker_ != nullptr && !ProgressUntilDone(requests, kGiveUpAfter)) ReplaceWorker();
      requests.clear();
      return absl::DeadlineExceededError(
          StrCat("kvstore transfer took over ", options_.transfer_timeout.count(), " ms; endpoint closed"));
    }
    if (lease_id != 0 && now - renewed > renew_every) {
      grpc::ClientContext context;
      SetDeadline(context, options_.rpc_timeout);
      proto::RenewLeaseRequest request;
      request.set_lease_id(lease_id);
      proto::RenewLeaseResponse response;
      (void)stub_->RenewLease(&context, request, &response);  // a failure shows at EndGet
      renewed = now;
    }
  }
  if (ep_failed_ && status.ok()) status = absl::UnavailableError("kvstore endpoint failed during the transfer");
  return status;
}

absl::StatusOr<std::vector<PutOutcome>> KvStoreClient::Put(absl::Span<const PutBlock> blocks) {
  std::vector<PutOutcome> outcomes;
  outcomes.reserve(blocks.size());
  const size_t batch = batch_keys_;
  for (size_t begin = 0; begin < blocks.size(); begin += batch) {
    const size_t count = std::min(batch, blocks.size() - begin);
    STRATA_ASSIGN_OR_RETURN(std::vector<PutOutcome> part, PutBatch(blocks.subspan(begin, count)));
    outcomes.insert(outcomes.end(), part.begin(), part.end());
  }
  return outcomes;
}

absl::StatusOr<std::vector<GetOutcome>> KvStoreClient::Get(absl::Span<const GetBlock> blocks) {
  std::vector<GetOutcome> outcomes;
  outcomes.reserve(blocks.size());
  const size_t batch = batch_keys_;
  for (size_t begin = 0; begin < blocks.size(); begin += batch) {
    const size_t count = std::min(batch, blocks.size() - begin);
    STRATA_ASSIGN_OR_RETURN(std::vector<GetOutcome> part, GetBatch(blocks.subspan(begin, count)));
    outcomes.insert(outcomes.end(), part.begin(), part.end());
  }
  return outcomes;
}

absl::StatusOr<std::vector<PutOutcome>> KvStoreClient::PutBatch(absl::Span<const PutBlock> blocks) {
  if (blocks.empty()) return std::vector<PutOutcome>();
  uint64_t connection = 0;
  {
    absl::MutexLock lock(&ucx_mutex_);
    for (const PutBlock& block : blocks) STRATA_RETURN_IF_ERROR(FindMemh(block.data, block.size_bytes).status());
    STRATA_RETURN_IF_ERROR(EnsureConnected());
    connection = connection_;
  }
  // The round trips run without ucx_mutex_: other threads' transfers on this client proceed meanwhile.
  proto::BeginPutRequest begin;
  for (const PutBlock& block : blocks) {
    proto::PutItem* item = begin.add_items();
    item->set_key(block.key.ToBytes());
    item->set_size_bytes(block.size_bytes);
    if (block.parent) item->set_parent_key(block.parent->ToBytes());
  }
  proto::BeginPutResponse reservation;
  {
    grpc::ClientContext context;
    SetDeadline(context, options_.rpc_timeout);
    STRATA_RETURN_IF_ERROR(FromGrpcStatus(stub_->BeginPut(&context, begin, &reservation)));
  }
  if (reservation.slots_size() != static_cast<int>(blocks.size())) {
    return absl::InternalError("kvstore BeginPut: reply does not match the request");
  }
  std::vector<PutOutcome> outcomes(blocks.size(), PutOutcome::kAlreadyPresent);
  if (reservation.put_id() == 0) return outcomes;
  auto abort = [&](absl::Status status) {
    grpc::ClientContext context;
    SetDeadline(context, options_.rpc_timeout);
    proto::AbortPutRequest request;
    request.set_put_id(reservation.put_id());
    proto::AbortPutResponse response;
    (void)stub_->AbortPut(&context, request, &response);  // else the daemon's put TTL frees it
    return status;
  };
  proto::CommitPutRequest commit;
  commit.set_put_id(reservation.put_id());
  {
    absl::MutexLock lock(&ucx_mutex_);
    BatchRkeys batch_rkeys(*this);
    if (connection_ != connection || ep_ == nullptr || ep_failed_) {
      return abort(absl::UnavailableError("kvstore endpoint failed during the put"));
    }
    std::vector<void*> requests;
    std::vector<std::optional<uint64_t>> streamed(blocks.size());  // checksums computed during the writes
    for (size_t i = 0; i < blocks.size(); ++i) {
      if (!reservation.slots(i).reserved()) continue;
      absl::StatusOr<ucp_mem_h> memh = FindMemh(blocks[i].data, blocks[i].size_bytes);
      absl::StatusOr<ucp_rkey_h> rkey =
          memh.ok() ? SlotRkey(reservation.rkey(), reservation.slots(i).rkey()) : memh.status();
      if (!rkey.ok()) {
        WaitAll(requests, 0, 0).IgnoreError();
        return abort(rkey.status());
      }
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMH;
      param.memh = *memh;
      if (blocks[i].size_bytes > kChunkBytes) {
        // A large block: hash a chunk, then write it, so that the write reads it from cache.
        ChecksumStream stream;
        const auto* data = static_cast<const uint8_t*>(blocks[i].data);
        for (uint64_t offset = 0; offset < blocks[i].size_bytes; offset += kChunkBytes) {
          const uint64_t bytes = std::min(kChunkBytes, blocks[i].size_bytes - offset);
          stream.Update(data + offset, bytes);
          void* request =
              ucp_put_nbx(ep_, data + offset, bytes, reservation.slots(i).remote_address() + offset, *rkey, &param);
          if (UCS_PTR_IS_ERR(request)) {
            WaitAll(requests, 0, 0).IgnoreError();
            return abort(FromUcsStatus(UCS_PTR_STATUS(request), "ucp_put_nbx"));
          }
          requests.push_back(request);
        }
        streamed[i] = stream.Digest();
        continue;
      }
      void* request = ucp_put_nbx(ep_, blocks[i].data, blocks[i].size_bytes, reservation.slots(i).remote_address(),
                                  *rkey, &param);
      if (UCS_PTR_IS_ERR(request)) {
        WaitAll(requests, 0, 0).IgnoreError();
        return abort(FromUcsStatus(UCS_PTR_STATUS(request), "ucp_put_nbx"));
      }
      requests.push_back(request);
    }
    ucp_request_param_t flush_param{};
    void* flush = ucp_ep_flush_nbx(ep_, &flush_param);  // remote completion of every put above
    if (UCS_PTR_IS_ERR(flush)) {
      WaitAll(requests, 0, 0).IgnoreError();
      return abort(FromUcsStatus(UCS_PTR_STATUS(flush), "ucp_ep_flush_nbx"));
    }
    // Checksums while the transfers run (where the transport completes them asynchronously).
    for (size_t i = 0; i < blocks.size(); ++i) {
      if (!reservation.slots(i).reserved()) continue;
      commit.add_checksums(streamed[i] ? *streamed[i] : BlockChecksum(blocks[i].data, blocks[i].size_bytes));
      outcomes[i] = PutOutcome::kStored;
    }
    requests.push_back(flush);
    if (absl::Status waited = WaitAll(requests, 0, 0); !waited.ok()) return abort(waited);
  }
  grpc::ClientContext context;
  SetDeadline(context, options_.rpc_timeout);
  proto::CommitPutResponse committed;
  STRATA_RETURN_IF_ERROR(FromGrpcStatus(stub_->CommitPut(&context, commit, &committed)));
  return outcomes;
}

void KvStoreClient::EndGetAsync(uint64_t lease_id) {
  struct Call {
    grpc::ClientContext context;
    proto::EndGetRequest request;
    proto::EndGetResponse response;
  };
  auto* call = new Call;
  SetDeadline(call->context, options_.rpc_timeout);
  call->request.set_lease_id(lease_id);
  {
    absl::MutexLock lock(&end_gets_mutex_);
    ++end_gets_in_flight_;
  }
  stub_->async()->EndGet(&call->context, &call->request, &call->response, [this, call](grpc::Status status) {
    if (!status.ok() && status.error_code() != grpc::StatusCode::NOT_FOUND) {
      // NOT_FOUND: the lease had already expired; the bytes were checked against their checksum anyway.
      LogWarning(StrCat("event=kvstore_end_get_failed lease=", call->request.lease_id(), " code=",
                        static_cast<int>(status.error_code()), " message=\"", status.error_message(), "\""));
    }
    delete call;
    absl::MutexLock lock(&end_gets_mutex_);
    --end_gets_in_flight_;
  });
}

void KvStoreClient::AwaitEndGets() {
  absl::MutexLock lock(&end_gets_mutex_);
  end_gets_mutex_.Await(absl::Condition(
      +[](int* in_flight) { return *in_flight == 0; }, &end_gets_in_flight_));
}

absl::StatusOr<std::vector<GetOutcome>> KvStoreClient::GetBatch(absl::Span<const GetBlock> blocks) {
  if (blocks.empty()) return std::vector<GetOutcome>();
  uint64_t connection = 0;
  {
    absl::MutexLock lock(&ucx_mutex_);
    for (const GetBlock& block : blocks) STRATA_RETURN_IF_ERROR(FindMemh(block.data, block.capacity_bytes).status());
    STRATA_RETURN_IF_ERROR(EnsureConnected());
    connection = connection_;
  }
  // The round trips run without ucx_mutex_: other threads' transfers on this client proceed meanwhile.
  proto::BeginGetRequest begin;
  for (const GetBlock& block : blocks) begin.add_keys(block.key.ToBytes());
  proto::BeginGetResponse lease;
  {
    grpc::ClientContext context;
    SetDeadline(context, options_.rpc_timeout);
    STRATA_RETURN_IF_ERROR(FromGrpcStatus(stub_->BeginGet(&context, begin, &lease)));
  }
  if (lease.slots_size() != static_cast<int>(blocks.size())) {
    return absl::InternalError("kvstore BeginGet: reply does not match the request");
  }
  std::vector<GetOutcome> outcomes(blocks.size());
  if (lease.lease_id() == 0) return outcomes;
  // With verify_reads nothing depends on EndGet's reply: every byte handed out is checked against the
  // checksum BeginGet returned. Without it, an expired lease (memory possibly reused mid-read) must fail
  // the call, so it waits.
  auto end_get = [&]() -> absl::Status {
    if (options_.verify_reads) {
      EndGetAsync(lease.lease_id());
      return absl::OkStatus();
    }
    grpc::ClientContext context;
    SetDeadline(context, options_.rpc_timeout);
    proto::EndGetRequest request;
    request.set_lease_id(lease.lease_id());
    proto::EndGetResponse response;
    return FromGrpcStatus(stub_->EndGet(&context, request, &response));
  };
  absl::Status status = absl::OkStatus();
  for (size_t i = 0; i < blocks.size() && status.ok(); ++i) {
    if (lease.slots(i).present() && lease.slots(i).size_bytes() > blocks[i].capacity_bytes) {
      status = absl::InvalidArgumentError(StrCat("block ", blocks[i].key.Hex(), " has ", lease.slots(i).size_bytes(),
                                                 " bytes; the buffer holds ", blocks[i].capacity_bytes));
    }
  }
  std::vector<std::optional<uint64_t>> streamed(blocks.size());  // checksums computed during the transfer
  {
    absl::MutexLock lock(&ucx_mutex_);
    BatchRkeys batch_rkeys(*this);
    if (status.ok() && (connection_ != connection || ep_ == nullptr || ep_failed_)) {
      status = absl::UnavailableError("kvstore endpoint failed during the get");
    }
    std::vector<void*> requests;
    TransferClock clock;
    clock.start = clock.renewed = std::chrono::steady_clock::now();
    for (size_t i = 0; i < blocks.size() && status.ok(); ++i) {
      const proto::GetSlot& slot = lease.slots(i);
      if (!slot.present()) continue;
      absl::StatusOr<ucp_mem_h> memh = FindMemh(blocks[i].data, blocks[i].capacity_bytes);
      absl::StatusOr<ucp_rkey_h> rkey = memh.ok() ? SlotRkey(lease.rkey(), slot.rkey()) : memh.status();
      if (!rkey.ok()) {
        status = rkey.status();
        break;
      }
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMH;
      param.memh = *memh;
      if (options_.verify_reads && slot.size_bytes() > kChunkBytes) {
        // A large block is read in chunks, each hashed as soon as it has landed (still in cache) instead
        // of re-reading the whole block from memory afterwards. Where the transport copies inline
        // (shared memory: the get completes within ucp_get_nbx) that is right after each copy; where it
        // completes later (TCP, verbs), every chunk is posted at once and hashed in order as it arrives.
        ChecksumStream stream;
        auto* data = static_cast<uint8_t*>(blocks[i].data);
        struct Pending {
          void* request;
          uint64_t offset, bytes;
        };
        std::deque<Pending> pending;
        auto hash_front = [&](bool wait) {
          while (!pending.empty() && status.ok()) {
            Pending& front = pending.front();
            if (front.request != nullptr) {
              if (!wait && ucp_request_check_status(front.request) == UCS_INPROGRESS) return;
              std::vector<void*> one = {front.request};
              front.request = nullptr;
              status = WaitAll(one, lease.lease_id(), lease.lease_ttl_ms(), &clock);
              if (!status.ok()) return;
            }
            stream.Update(data + front.offset, front.bytes);
            pending.pop_front();
          }
        };
        for (uint64_t offset = 0; offset < slot.size_bytes() && status.ok(); offset += kChunkBytes) {
          const uint64_t bytes = std::min(kChunkBytes, slot.size_bytes() - offset);
          void* request = ucp_get_nbx(ep_, data + offset, bytes, slot.remote_address() + offset, *rkey, &param);
          if (UCS_PTR_IS_ERR(request)) {
            status = FromUcsStatus(UCS_PTR_STATUS(request), "ucp_get_nbx");
            break;
          }
          pending.push_back({request, offset, bytes});
          hash_front(/*wait=*/false);
        }
        hash_front(/*wait=*/true);
        for (const Pending& left : pending) {
          if (left.request != nullptr) requests.push_back(left.request);  // after an error: waited below
        }
        if (status.ok()) streamed[i] = stream.Digest();
        continue;
      }
      void* request = ucp_get_nbx(ep_, blocks[i].data, slot.size_bytes(), slot.remote_address(), *rkey, &param);
      if (UCS_PTR_IS_ERR(request)) {
        status = FromUcsStatus(UCS_PTR_STATUS(request), "ucp_get_nbx");
        break;
      }
      requests.push_back(request);
    }
    const absl::Status waited = WaitAll(requests, lease.lease_id(), lease.lease_ttl_ms(), &clock);
    if (status.ok()) status = waited;
  }
  const absl::Status ended = end_get();
  if (!status.ok()) return status;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const proto::GetSlot& slot = lease.slots(i);
    if (!slot.present()) continue;
    const uint64_t checksum =
        options_.verify_reads ? (streamed[i] ? *streamed[i] : BlockChecksum(blocks[i].data, slot.size_bytes())) : 0;
    if (options_.verify_reads && checksum != slot.checksum()) {
      LogWarning(StrCat("event=kvstore_read_checksum_mismatch key=", blocks[i].key.Hex(), " action=miss"));
      continue;
    }
    outcomes[i] = GetOutcome{true, slot.tier(), slot.size_bytes()};
  }
  // An expired lease means the daemon may have reused the memory mid-read; unverified bytes are unusable.
  if (!ended.ok() && !options_.verify_reads) return ended;
  return outcomes;
}

std::future<absl::StatusOr<std::vector<PutOutcome>>> KvStoreClient::PutAsync(std::vector<PutBlock> blocks) {
  return std::async(std::launch::async, [this, blocks = std::move(blocks)] { return Put(blocks); });
}

std::future<absl::StatusOr<std::vector<GetOutcome>>> KvStoreClient::GetAsync(std::vector<GetBlock> blocks) {
  return std::async(std::launch::async, [this, blocks = std::move(blocks)] { return Get(blocks); });
}

absl::StatusOr<proto::LookupResponse> KvStoreClient::Lookup(absl::Span<const BlockKey> keys) {
  AwaitEndGets();
  proto::LookupResponse all;
  bool prefix_unbroken = true;
  const size_t batch = batch_keys_;
  for (size_t begin = 0; begin < keys.size(); begin += batch) {
    proto::LookupRequest request;
    for (const BlockKey& key : keys.subspan(begin, std::min(batch, keys.size() - begin))) {
      request.add_keys(key.ToBytes());
    }
    grpc::ClientContext context;
    SetDeadline(context, options_.rpc_timeout);
    proto::LookupResponse response;
    STRATA_RETURN_IF_ERROR(FromGrpcStatus(stub_->Lookup(&context, request, &response)));
    if (prefix_unbroken)
      all.set_longest_present_prefix(all.longest_present_prefix() + response.longest_present_prefix());
    prefix_unbroken =
        prefix_unbroken && response.longest_present_prefix() == static_cast<uint32_t>(request.keys_size());
    for (proto::BlockInfo& info : *response.mutable_blocks()) *all.add_blocks() = std::move(info);
  }
  return all;
}

absl::StatusOr<uint32_t> KvStoreClient::Delete(absl::Span<const BlockKey> keys) {
  AwaitEndGets();
  uint32_t deleted = 0;
  const size_t batch = batch_keys_;
  for (size_t begin = 0; begin < keys.size(); begin += batch) {
    proto::DeleteRequest request;
    for (const BlockKey& key : keys.subspan(begin, std::min(batch, keys.size() - begin))) {
      request.add_keys(key.ToBytes());
    }
    grpc::ClientContext context;
    SetDeadline(context, options_.rpc_timeout);
    proto::DeleteResponse response;
    STRATA_RETURN_IF_ERROR(FromGrpcStatus(stub_->Delete(&context, request, &response)));
    deleted += response.deleted();
  }
  return deleted;
}

absl::StatusOr<proto::StatsResponse> KvStoreClient::Stats() {
  AwaitEndGets();
  grpc::ClientContext context;
  SetDeadline(context, options_.rpc_timeout);
  proto::StatsResponse response;
  STRATA_RETURN_IF_ERROR(FromGrpcStatus(stub_->Stats(&context, proto::StatsRequest(), &response)));
  return response;
}

}  // namespace strata::kvstore
