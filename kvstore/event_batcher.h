// Collects the store's block changes (kvstore/block_events.h) between flushes, coalescing runs of one kind:
// an eviction sweep of a thousand blocks becomes one STORED-at-SSD event, not a thousand. The scheduler
// link (kvstore/scheduler_link.h) drains it every few milliseconds into the holder agent, which numbers
// the events for the scheduler.
//
// Unbounded on purpose: the link drains it every few milliseconds whether or not the scheduler is
// reachable (the agent drops events while disconnected and bounds its own queue, then resyncs).
// Thread-safe; the BlockListener calls only append under a mutex (they run under the store's lock).
#ifndef STRATA_KVSTORE_EVENT_BATCHER_H_
#define STRATA_KVSTORE_EVENT_BATCHER_H_

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "kvstore/block_events.h"

namespace strata::kvstore {

struct BlockEvent {
  enum class Type { kStored, kEvicted };
  Type type = Type::kStored;
  Tier tier = Tier::kDram;  // for kStored
  std::vector<BlockKey> keys;

  friend bool operator==(const BlockEvent&, const BlockEvent&) = default;
};

class EventBatcher final : public BlockListener {
 public:
  void OnStored(Tier tier, absl::Span<const BlockKey> keys) override;
  void OnEvicted(absl::Span<const BlockKey> keys) override;

  // The changes recorded since the last Drain() or Cut(), in the order the store made them.
  std::vector<BlockEvent> Drain();

  // Drops what is pending: an inventory taken now covers it. Call it inside Store::Inventory's cut.
  void Cut();

  uint64_t pending_keys() const;

 private:
  void Append(BlockEvent::Type type, Tier tier, absl::Span<const BlockKey> keys);

  mutable absl::Mutex mutex_;
  std::vector<BlockEvent> pending_ ABSL_GUARDED_BY(mutex_);
  uint64_t pending_keys_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_EVENT_BATCHER_H_
