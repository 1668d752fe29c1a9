#include "kvstore/ucx_server.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>

#include "common/log.h"
#include "common/status.h"
#include "kvstore/ucx_status.h"

namespace strata::kvstore {
namespace {

constexpr uint64_t kArenaAlignment = uint64_t{2} << 20;
constexpr auto kSpinAfterActivity = std::chrono::milliseconds(2);
constexpr auto kMinPause = std::chrono::microseconds(20);
constexpr auto kMaxPause = std::chrono::microseconds(1000);

}  // namespace

absl::StatusOr<std::unique_ptr<UcxServer>> UcxServer::Start(uint64_t arena_bytes, RkeyScope rkey_scope,
                                                            const std::optional<std::string>& net_devices) {
  if (arena_bytes == 0) return absl::InvalidArgumentError("DRAM arena: size must be positive");
  const uint64_t bytes = (arena_bytes + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
  std::unique_ptr<UcxServer> server(new UcxServer());
  ucp_config_t* config = nullptr;
  STRATA_UCX_RETURN_IF_ERROR(ucp_config_read(nullptr, nullptr, &config));
  if (rkey_scope == RkeyScope::kGrant) {
    // A block's registration must be its own: no cache handing back the arena's, no on-demand-paging MR
    // over the whole address space (UCX 1.13 takes unknown keys for transports not loaded).
    for (const auto& [name, value] : {std::pair{"RCACHE_ENABLE", "n"}, std::pair{"IB_REG_METHODS", "direct"}}) {
      if (ucs_status_t modified = ucp_config_modify(config, name, value); modified != UCS_OK) {
        ucp_config_release(config);
        return FromUcsStatus(modified, StrCat("ucp_config_modify UCX_", name, "=", value));
      }
    }
  }
  if (net_devices.has_value()) {
    if (ucs_status_t modified = ucp_config_modify(config, "NET_DEVICES", net_devices->c_str()); modified != UCS_OK) {
      ucp_config_release(config);
      return FromUcsStatus(modified, StrCat("ucp_config_modify UCX_NET_DEVICES=", *net_devices));
    }
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = UCP_FEATURE_RMA;  // no WAKEUP: see Progress()
  params.mt_workers_shared = 1;       // gRPC threads register blocks (RegisterBlock) while the worker progresses
  const ucs_status_t init = ucp_init(&params, config, &server->context_);
  ucp_config_release(config);
  STRATA_UCX_RETURN_IF_ERROR(init);

  ucp_worker_params_t worker_params{};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the progress thread touches it after start
  STRATA_UCX_RETURN_IF_ERROR(ucp_worker_create(server->context_, &worker_params, &server->worker_));

  ucp_address_t* address = nullptr;
  size_t address_bytes = 0;
  STRATA_UCX_RETURN_IF_ERROR(ucp_worker_get_address(server->worker_, &address, &address_bytes));
  server->worker_address_.assign(reinterpret_cast<const char*>(address), address_bytes);
  ucp_worker_release_address(server->worker_, address);

  ucp_mem_map_params_t map_params{};
  map_params.field_mask =
      UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH | UCP_MEM_MAP_PARAM_FIELD_FLAGS;
  map_params.address = nullptr;
  map_params.length = bytes;
  map_params.flags = UCP_MEM_MAP_ALLOCATE;
  if (ucs_status_t mapped = ucp_mem_map(server->context_, &map_params, &server->memh_); mapped != UCS_OK) {
    return absl::ResourceExhaustedError(StrCat("DRAM arena: UCX could not allocate ", bytes, " bytes (",
                                               ucs_status_string(mapped), "); lower --dram-bytes"));
  }
  ucp_mem_attr_t attributes{};
  attributes.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
  STRATA_UCX_RETURN_IF_ERROR(ucp_mem_query(server->memh_, &attributes));
  server->arena_ = static_cast<uint8_t*>(attributes.address);
  server->arena_bytes_ = bytes;
  // Fault every page in now: the memory is committed at start-up (a machine without it fails here, not
  // mid-transfer) and no transfer pays for first-touch page faults.
  if (madvise(server->arena_, bytes, MADV_POPULATE_WRITE) != 0) {
    for (uint64_t offset = 0; offset < bytes; offset += 4096)
      static_cast<volatile uint8_t*>(server->arena_)[offset] = 0;
  }
  void* rkey = nullptr;
  size_t rkey_bytes = 0;
  STRATA_UCX_RETURN_IF_ERROR(ucp_rkey_pack(server->context_, server->memh_, &rkey, &rkey_bytes));
  server->rkey_.assign(static_cast<const char*>(rkey), rkey_bytes);
  ucp_rkey_buffer_release(rkey);

  UcxServer* raw = server.get();
  server->thread_ = std::thread([raw] { raw->Progress(); });
  LogInfo(StrCat("event=ucx_ready arena_bytes=", bytes, " worker_address_bytes=", server->worker_address_.size(),
                 " rkey_bytes=", server->rkey_.size()));
  return server;
}

absl::StatusOr<std::unique_ptr<UcxServer::BlockRkey>> UcxServer::RegisterBlock(uint64_t offset, uint64_t bytes) {
  if (bytes == 0 || offset > arena_bytes_ || bytes > arena_bytes_ - offset) {
    return absl::InvalidArgumentError(
        StrCat("block rkey: [", offset, ", +", bytes, ") is outside the arena of ", arena_bytes_, " bytes"));
  }
  std::unique_ptr<BlockRkey> block(new BlockRkey(*this));
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  params.address = arena_ + offset;
  params.length = bytes;
  STRATA_UCX_RETURN_IF_ERROR(ucp_mem_map(context_, &params, &block->memh_));
  ++block_rkeys_;  // from here the destructor unmaps
  if (block->memh_ == memh_) {
    return absl::InternalError("block rkey: UCX handed back the arena's registration (its registration cache is on)");
  }
  void* packed = nullptr;
  size_t packed_bytes = 0;
  STRATA_UCX_RETURN_IF_ERROR(ucp_rkey_pack(context_, block->memh_, &packed, &packed_bytes));
  block->packed_.assign(static_cast<const char*>(packed), packed_bytes);
  ucp_rkey_buffer_release(packed);
  return block;
}

UcxServer::BlockRkey::~BlockRkey() {
  if (memh_ == nullptr) return;
  ucp_mem_unmap(server_.context_, memh_);
  --server_.block_rkeys_;
}

void UcxServer::Progress() {
  // Spin while there is traffic, then back off to short sleeps: one-sided transports (shared memory,
  // RDMA) need nothing from this thread, but TCP emulates RMA with messages that this worker must handle.
  // Sleeping on the worker's event fd instead (UCP_FEATURE_WAKEUP) was tried first: here, messages that
  // UCX emulates over shared memory then waited out the poll timeout (p99 ~100 ms per transfer).
  auto idle_since = std::chrono::steady_clock::now();
  auto pause = kMinPause;
  while (!stop_.load(std::memory_order_relaxed)) {
    if (ucp_worker_progress(worker_) != 0) {
      idle_since = std::chrono::steady_clock::now();
      pause = kMinPause;
      continue;
    }
    if (std::chrono::steady_clock::now() - idle_since < kSpinAfterActivity) continue;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, kMaxPause);
  }
}

UcxServer::~UcxServer() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  if (memh_ != nullptr) ucp_mem_unmap(context_, memh_);
  if (worker_ != nullptr) ucp_worker_destroy(worker_);
  if (context_ != nullptr) ucp_cleanup(context_);
}

}  // namespace strata::kvstore
