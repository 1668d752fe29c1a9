#include "kvstore/event_batcher.h"

namespace strata::kvstore {

void EventBatcher::OnStored(Tier tier, absl::Span<const BlockKey> keys) {
  Append(BlockEvent::Type::kStored, tier, keys);
}

void EventBatcher::OnEvicted(absl::Span<const BlockKey> keys) {
  Append(BlockEvent::Type::kEvicted, Tier::kDram, keys);
}

void EventBatcher::Append(BlockEvent::Type type, Tier tier, absl::Span<const BlockKey> keys) {
  if (keys.empty()) return;
  absl::MutexLock lock(&mutex_);
  if (overflowed_) return;  // an inventory will cover these
  if (pending_keys_ + keys.size() > max_pending_keys_) {
    pending_.clear();
    pending_keys_ = 0;
    overflowed_ = true;
    return;
  }
  if (pending_.empty() || pending_.back().type != type || (type == BlockEvent::Type::kStored && pending_.back().tier != tier)) {
    pending_.push_back(BlockEvent{0, type, tier, {}});
  }
  pending_.back().keys.insert(pending_.back().keys.end(), keys.begin(), keys.end());
  pending_keys_ += keys.size();
}

EventBatcher::Drained EventBatcher::Drain() {
  absl::MutexLock lock(&mutex_);
  Drained out;
  out.overflowed = overflowed_;
  overflowed_ = false;
  out.events = std::move(pending_);
  pending_.clear();
  pending_keys_ = 0;
  for (BlockEvent& event : out.events) event.sequence = ++sequence_;
  return out;
}

uint64_t EventBatcher::Cut() {
  absl::MutexLock lock(&mutex_);
  pending_.clear();
  pending_keys_ = 0;
  overflowed_ = false;
  return sequence_;
}

uint64_t EventBatcher::last_sequence() const {
  absl::MutexLock lock(&mutex_);
  return sequence_;
}

uint64_t EventBatcher::pending_keys() const {
  absl::MutexLock lock(&mutex_);
  return pending_keys_;
}

}  // namespace strata::kvstore
