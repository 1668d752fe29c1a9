// The daemon's UCX data plane: one context and worker, the DRAM arena allocated and registered once
// (ucp_mem_map with UCP_MEM_MAP_ALLOCATE) and its rkey packed once, and a progress thread.
//
// UCX allocates the arena itself so that peers on the same host can map it: its allocator tries SysV and
// POSIX shared memory first (SysV with SHM_HUGETLB where the kernel has huge pages reserved), and an
// rkey of such a segment lets a local client read and write it with plain memcpy, one-sided. Memory
// that UCX did not allocate has no shared-memory rkey, and UCX then emulates RMA with active messages
// through this daemon's worker (gets at 0.2-1.0x the shared-memory rate here: docs/BENCHMARKS.md).
//
// With --rkey-scope=grant (default) the arena's rkey is never handed out: each granted block is registered
// on its own (BlockRkey) for as long as its put or lease lasts. On transports that check rkeys (RDMA verbs)
// a peer then reaches only the blocks it was granted, and only while the grant holds; it costs the
// same-host shared-memory path, since only the arena-wide registration is a shared segment
// (--rkey-scope=arena hands that out). UCX's registration caches are off then (UCX_RCACHE_ENABLE=n,
// UCX_IB_REG_METHODS=direct): with them a block's registration is the arena's own (same rkey, shared
// segment included) or an on-demand-paging one, and unmapping it would not deregister anything.
//
// The arena is faulted in at start-up. Clients connect to the worker address (handed out over gRPC) and
// read and write the arena with one-sided RMA; the daemon's thread only has to progress the worker
// (transports such as TCP emulate RMA with messages the target must handle). The thread spins while there
// is traffic and sleeps in short, growing pauses (at most 1 ms) when there is none.
#ifndef STRATA_KVSTORE_UCX_SERVER_H_
#define STRATA_KVSTORE_UCX_SERVER_H_

#include <ucp/api/ucp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "kvstore/options.h"

namespace strata::kvstore {

class UcxServer {
 public:
  // Allocates and registers an arena of `arena_bytes` (rounded up to 2 MiB) and starts the progress thread.
  // With RkeyScope::kGrant, UCX's registration caches are off (see above). `net_devices`, when set, is
  // UCX_NET_DEVICES for this context (ucx_devices.h).
  static absl::StatusOr<std::unique_ptr<UcxServer>> Start(uint64_t arena_bytes, RkeyScope rkey_scope,
                                                          const std::optional<std::string>& net_devices = std::nullopt);
  ~UcxServer();  // stops the thread, unregisters, destroys the worker and context
  UcxServer(const UcxServer&) = delete;
  UcxServer& operator=(const UcxServer&) = delete;

  const std::string& worker_address() const { return worker_address_; }
  const std::string& rkey() const { return rkey_; }  // the whole arena's

  // [offset, offset + bytes) of the arena registered on its own, with its rkey; unregistered when destroyed.
  class BlockRkey {
   public:
    ~BlockRkey();
    BlockRkey(const BlockRkey&) = delete;
    BlockRkey& operator=(const BlockRkey&) = delete;
    const std::string& packed() const { return packed_; }

   private:
    friend class UcxServer;
    explicit BlockRkey(UcxServer& server) : server_(server) {}
    UcxServer& server_;
    ucp_mem_h memh_ = nullptr;
    std::string packed_;
  };
  // Thread-safe. InvalidArgument: a range outside the arena. Internal: UCX handed back the arena's own
  // registration (its caches are on: a server started with RkeyScope::kArena).
  absl::StatusOr<std::unique_ptr<BlockRkey>> RegisterBlock(uint64_t offset, uint64_t bytes);
  // BlockRkeys alive now (the gauge strata_kvstore_block_rkeys).
  int64_t block_rkeys() const { return block_rkeys_.load(std::memory_order_relaxed); }
  uint8_t* arena() const { return arena_; }
  uint64_t arena_bytes() const { return arena_bytes_; }

 private:
  UcxServer() = default;
  void Progress();

  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_mem_h memh_ = nullptr;
  uint8_t* arena_ = nullptr;
  uint64_t arena_bytes_ = 0;
  std::string worker_address_;
  std::string rkey_;
  std::atomic<int64_t> block_rkeys_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_UCX_SERVER_H_
