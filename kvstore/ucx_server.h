// The daemon's UCX data plane: one context and worker, the arena registered once (ucp_mem_map) and its
// rkey packed once, and a progress thread. Clients connect to the worker address (handed out over gRPC)
// and read and write the arena with one-sided RMA; the daemon's thread only has to progress the worker
// (transports such as TCP emulate RMA with messages the target must handle). The thread sleeps on the
// worker's event fd when there is nothing to do.
#ifndef STRATA_KVSTORE_UCX_SERVER_H_
#define STRATA_KVSTORE_UCX_SERVER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include <ucp/api/ucp.h>

#include "absl/status/statusor.h"

namespace strata::kvstore {

class UcxServer {
 public:
  // Registers [arena, arena + bytes) and starts the progress thread.
  static absl::StatusOr<std::unique_ptr<UcxServer>> Start(void* arena, uint64_t bytes);
  ~UcxServer();  // stops the thread, unregisters, destroys the worker and context
  UcxServer(const UcxServer&) = delete;
  UcxServer& operator=(const UcxServer&) = delete;

  const std::string& worker_address() const { return worker_address_; }
  const std::string& rkey() const { return rkey_; }

 private:
  UcxServer() = default;
  void Progress();

  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_mem_h memh_ = nullptr;
  int event_fd_ = -1;
  std::string worker_address_;
  std::string rkey_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_UCX_SERVER_H_
