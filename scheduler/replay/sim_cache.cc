#include "scheduler/replay/sim_cache.h"

namespace strata::scheduler::replay {

void TwoTierLru::Touch(absl::Span<const uint64_t> ids, std::vector<CacheChange>* changes) {
  for (uint64_t id : ids) {
    auto [it, inserted] = entries_.try_emplace(id);
    Entry& entry = it->second;
    if (!inserted && entry.where == Where::kFast) {
      fast_.splice(fast_.begin(), fast_, entry.position);
      continue;
    }
    if (!inserted) slow_.erase(entry.position);  // promoted on use
    fast_.push_front(id);
    entry.where = Where::kFast;
    entry.position = fast_.begin();
    changes->push_back({EventType::kStored, false, id});
  }
  while (fast_.size() > fast_capacity_) {
    const uint64_t victim = fast_.back();
    fast_.pop_back();
    Entry& entry = entries_[victim];
    if (slow_capacity_ == 0) {
      entries_.erase(victim);
      changes->push_back({EventType::kEvicted, false, victim});
      continue;
    }
    slow_.push_front(victim);
    entry.where = Where::kSlow;
    entry.position = slow_.begin();
    changes->push_back({EventType::kStored, true, victim});
  }
  while (slow_.size() > slow_capacity_) {
    const uint64_t victim = slow_.back();
    slow_.pop_back();
    entries_.erase(victim);
    changes->push_back({EventType::kEvicted, false, victim});
  }
}

std::vector<std::pair<uint64_t, bool>> TwoTierLru::Contents() const {
  std::vector<std::pair<uint64_t, bool>> out;
  out.reserve(entries_.size());
  for (const auto& [id, entry] : entries_) out.emplace_back(id, entry.where == Where::kSlow);
  return out;
}

}  // namespace strata::scheduler::replay
