// Collects the store's block changes (kvstore/block_events.h) between flushes into numbered events for
// the scheduler (proto/scheduler.proto KvEvent): runs of one kind coalesce, so an eviction sweep of a
// thousand blocks is one STORED-at-SSD event, not a thousand. The scheduler link drains it every few ms.
//
// Sequence numbers follow the scheduler's protocol: an inventory carries sequence S (Cut()), the events
// after it are S+1, S+2, ... (Drain()). Thread-safe; the BlockListener calls only append under a mutex.
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
  uint64_t sequence = 0;
  Type type = Type::kStored;
  Tier tier = Tier::kDram;  // for kStored
  std::vector<BlockKey> keys;

  friend bool operator==(const BlockEvent&, const BlockEvent&) = default;
};

class EventBatcher final : public BlockListener {
 public:
  // Past `max_pending_keys` keys not yet drained (the scheduler unreachable for long), everything pending
  // is dropped and the next Drain() says `overflowed`: the caller then sends an inventory instead.
  explicit EventBatcher(uint64_t max_pending_keys = uint64_t{1} << 20) : max_pending_keys_(max_pending_keys) {}

  void OnStored(Tier tier, absl::Span<const BlockKey> keys) override;
  void OnEvicted(absl::Span<const BlockKey> keys) override;

  struct Drained {
    std::vector<BlockEvent> events;  // numbered last_sequence()+1, +2, ... in the order recorded
    bool overflowed = false;         // events were dropped: send an inventory (Store::Inventory + Cut)
  };
  // The events recorded since the last Drain() or Cut().
  Drained Drain();

  // Drops what is pending and returns the sequence an inventory taken now carries (the next event is this
  // + 1). Call it inside Store::Inventory's cut, so that the inventory holds exactly the changes recorded
  // up to here.
  uint64_t Cut();

  uint64_t last_sequence() const;  // the last number Drain() handed out or Cut() returned
  uint64_t pending_keys() const;

 private:
  void Append(BlockEvent::Type type, Tier tier, absl::Span<const BlockKey> keys);

  const uint64_t max_pending_keys_;
  mutable absl::Mutex mutex_;
  std::vector<BlockEvent> pending_ ABSL_GUARDED_BY(mutex_);
  uint64_t pending_keys_ ABSL_GUARDED_BY(mutex_) = 0;
  bool overflowed_ ABSL_GUARDED_BY(mutex_) = false;
  uint64_t sequence_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_EVENT_BATCHER_H_
