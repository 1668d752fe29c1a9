// A simulated holder's cache: a fast tier (G on a worker, S on a kvstore) that demotes its least recently
// used blocks to a slow tier (H, D), which drops its own LRU blocks. Every change is logged as the KV
// event the real holder would send, so replay feeds the scheduler's index the way workers will.
#ifndef STRATA_SCHEDULER_REPLAY_SIM_CACHE_H_
#define STRATA_SCHEDULER_REPLAY_SIM_CACHE_H_

#include <cstdint>
#include <list>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "scheduler/block_index.h"

namespace strata::scheduler::replay {

struct CacheChange {
  EventType type = EventType::kStored;
  bool slow = false;  // for kStored: which tier it is now in
  uint64_t id = 0;
};

class TwoTierLru {
 public:
  enum class Where : uint8_t { kNone, kFast, kSlow };

  TwoTierLru(uint64_t fast_capacity, uint64_t slow_capacity)
      : fast_capacity_(fast_capacity), slow_capacity_(slow_capacity) {}

  Where Find(uint64_t id) const {
    auto it = entries_.find(id);
    return it == entries_.end() ? Where::kNone : it->second.where;
  }

  // Puts each id into the fast tier as most recently used, in order (the last one ends up most recent),
  // then demotes and drops what overflows. Appends every change to `changes`.
  void Touch(absl::Span<const uint64_t> ids, std::vector<CacheChange>* changes);

  // Everything held: (id, in slow tier).
  std::vector<std::pair<uint64_t, bool>> Contents() const;
  uint64_t size() const { return entries_.size(); }

 private:
  struct Entry {
    Where where = Where::kNone;
    std::list<uint64_t>::iterator position;
  };
  uint64_t fast_capacity_;
  uint64_t slow_capacity_;
  std::list<uint64_t> fast_;  // front: most recent
  std::list<uint64_t> slow_;
  absl::flat_hash_map<uint64_t, Entry> entries_;
};

}  // namespace strata::scheduler::replay

#endif  // STRATA_SCHEDULER_REPLAY_SIM_CACHE_H_
