// Keeps the scheduler's block index informed of this kvstore: registers it as HOLDER_KIND_KVSTORE through
// scheduler/client's HolderAgent (lease, heartbeats, resync, re-registration), forwards the store's block
// changes (EventBatcher) every `flush_interval` as STORED at TIER_KVSTORE_DRAM / TIER_KVSTORE_SSD and
// EVICTED events, and answers the agent's inventory requests from Store::Inventory.
//
// The store keeps serving while the scheduler is away; the agent retries and resends the inventory.
// Thread-safe; one flusher thread.
#ifndef STRATA_KVSTORE_SCHEDULER_LINK_H_
#define STRATA_KVSTORE_SCHEDULER_LINK_H_

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/metrics.h"
#include "kvstore/event_batcher.h"
#include "kvstore/store.h"
#include "scheduler/client/holder_agent.h"

namespace strata::kvstore {

struct SchedulerLinkOptions {
  std::vector<std::string> scheduler_addresses;  // host:port of each replica
  std::shared_ptr<const RpcSecurity> security = RpcSecurity::Insecure();  // the channel's certificate and token
  std::string holder_id;          // unique in the cluster
  std::string advertise_address;  // where workers reach this kvstore's gRPC (host:port)
  uint64_t dram_blocks = 0;       // capacities reported at registration (informational)
  uint64_t ssd_blocks = 0;
  double ssd_read_bytes_per_s = 0;  // tier D's read rate (placement prices SSD hits with it); 0: no SSD tier
  std::chrono::milliseconds flush_interval{20};
};

class SchedulerLink {
 public:
  // `store`, `batcher` (the store's listener) and `metrics` outlive the link. Starts the agent and the
  // flusher; never blocks on the scheduler.
  SchedulerLink(SchedulerLinkOptions options, Store& store, EventBatcher& batcher, MetricsRegistry& metrics);
  ~SchedulerLink();  // stops the flusher, deregisters (best effort)

  bool connected() const { return agent_->connected(); }

 private:
  void FlushLoop();
  void Flush();
  scheduler::TierInventory Inventory();

  Store& store_;
  EventBatcher& batcher_;
  const std::chrono::milliseconds flush_interval_;
  // Orders a flush (drain, then push to the agent) against an inventory (snapshot and cut), so that no
  // drained change reaches the agent after an inventory that already holds a newer state of its key.
  absl::Mutex flush_mutex_;
  std::unique_ptr<scheduler::HolderAgent> agent_;
  absl::Notification stop_;
  std::thread flusher_;
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_SCHEDULER_LINK_H_
