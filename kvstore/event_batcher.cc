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
  if (pending_.empty() || pending_.back().type != type ||
      (type == BlockEvent::Type::kStored && pending_.back().tier != tier)) {
    pending_.push_back(BlockEvent{type, tier, {}});
  }
  pending_.back().keys.insert(pending_.back().keys.end(), keys.begin(), keys.end());
  pending_keys_ += keys.size();
}

std::vector<BlockEvent> EventBatcher::Drain() {
  absl::MutexLock lock(&mutex_);
  std::vector<BlockEvent> out = std::move(pending_);
  pending_.clear();
  pending_keys_ = 0;
  return out;
}

void EventBatcher::Cut() {
  absl::MutexLock lock(&mutex_);
  pending_.clear();
  pending_keys_ = 0;
}

uint64_t EventBatcher::pending_keys() const {
  absl::MutexLock lock(&mutex_);
  return pending_keys_;
}

}  // namespace strata::kvstore
