#include "kvstore/ucx_server.h"

#include <poll.h>

#include "common/log.h"
#include "common/status.h"
#include "kvstore/ucx_status.h"

namespace strata::kvstore {

absl::StatusOr<std::unique_ptr<UcxServer>> UcxServer::Start(void* arena, uint64_t bytes) {
  std::unique_ptr<UcxServer> server(new UcxServer());
  ucp_config_t* config = nullptr;
  STRATA_UCX_RETURN_IF_ERROR(ucp_config_read(nullptr, nullptr, &config));
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
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
  map_params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  map_params.address = arena;
  map_params.length = bytes;
  STRATA_UCX_RETURN_IF_ERROR(ucp_mem_map(server->context_, &map_params, &server->memh_));
  void* rkey = nullptr;
  size_t rkey_bytes = 0;
  STRATA_UCX_RETURN_IF_ERROR(ucp_rkey_pack(server->context_, server->memh_, &rkey, &rkey_bytes));
  server->rkey_.assign(static_cast<const char*>(rkey), rkey_bytes);
  ucp_rkey_buffer_release(rkey);

  STRATA_UCX_RETURN_IF_ERROR(ucp_worker_get_efd(server->worker_, &server->event_fd_));
  UcxServer* raw = server.get();
  server->thread_ = std::thread([raw] { raw->Progress(); });
  LogInfo(StrCat("event=ucx_ready arena_bytes=", bytes, " worker_address_bytes=", server->worker_address_.size(),
                 " rkey_bytes=", server->rkey_.size()));
  return server;
}

void UcxServer::Progress() {
  while (!stop_.load(std::memory_order_relaxed)) {
    while (ucp_worker_progress(worker_) != 0) {
    }
    const ucs_status_t armed = ucp_worker_arm(worker_);
    if (armed == UCS_ERR_BUSY) continue;  // events arrived meanwhile
    if (armed != UCS_OK) {
      LogError(StrCat("error=ucx_worker_arm status=", ucs_status_string(armed)));
    }
    pollfd fd{event_fd_, POLLIN, 0};
    poll(&fd, 1, /*timeout_ms=*/100);
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
