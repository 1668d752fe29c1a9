#include "worker/prefix/host_block_cache.h"

namespace strata::worker {
namespace {

// How far from the LRU end eviction looks for a leaf before it takes the oldest block regardless: a
// bound on the work of one eviction (chains are short next to the cache, so a leaf is almost always near).
constexpr int kLeafScanLimit = 64;

}  // namespace

HostBlockCache::HostBlockCache(uint64_t capacity_bytes, HostCacheListener listener)
    : capacity_bytes_(capacity_bytes), listener_(std::move(listener)) {}

void HostBlockCache::Insert(std::vector<Entry> blocks) {
  std::vector<BlockKey> stored, evicted;
  absl::MutexLock lock(&mutex_);
  for (Entry& entry : blocks) {
    if (entry.payload == nullptr || entry.payload->size() > capacity_bytes_) continue;
    if (auto it = index_.find(entry.key); it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      continue;
    }
    MakeRoom(entry.payload->size(), evicted);
    bytes_ += entry.payload->size();
    lru_.push_front(Node{entry.key, entry.parent, std::move(entry.payload), 0});
    index_[entry.key] = lru_.begin();
    if (entry.parent.has_value()) {
      if (auto parent = index_.find(*entry.parent); parent != index_.end()) ++parent->second->cached_children;
    }
    stored.push_back(entry.key);
  }
  // A block stored and evicted within this call is reported both ways, in that order.
  if (!stored.empty() && listener_.stored) listener_.stored(stored);
  if (!evicted.empty() && listener_.evicted) listener_.evicted(evicted);
}

void HostBlockCache::MakeRoom(uint64_t needed, std::vector<BlockKey>& evicted) {
  while (!lru_.empty() && bytes_ + needed > capacity_bytes_) {
    auto victim = std::prev(lru_.end());
    auto it = victim;
    for (int scanned = 0; scanned < kLeafScanLimit; ++scanned) {
      if (it->cached_children == 0) {
        victim = it;
        break;
      }
      if (it == lru_.begin()) break;
      --it;
    }
    Erase(victim, evicted);
  }
}

void HostBlockCache::Erase(List::iterator it, std::vector<BlockKey>& evicted) {
  if (it->parent.has_value()) {
    if (auto parent = index_.find(*it->parent); parent != index_.end() && parent->second->cached_children > 0) {
      --parent->second->cached_children;
    }
  }
  bytes_ -= it->payload->size();
  evicted.push_back(it->key);
  index_.erase(it->key);
  lru_.erase(it);
}

void HostBlockCache::Remove(const BlockKey& key) {
  std::vector<BlockKey> evicted;
  absl::MutexLock lock(&mutex_);
  auto it = index_.find(key);
  if (it == index_.end()) return;
  Erase(it->second, evicted);
  if (listener_.evicted) listener_.evicted(evicted);
}

std::vector<std::shared_ptr<const BlockPayload>> HostBlockCache::LongestPrefix(absl::Span<const BlockKey> keys) {
  std::vector<std::shared_ptr<const BlockPayload>> out;
  absl::MutexLock lock(&mutex_);
  for (const BlockKey& key : keys) {
    auto it = index_.find(key);
    if (it == index_.end()) break;
    out.push_back(it->second->payload);
  }
  // Touch from the last to the first, so that the chain's root ends most recently used: ancestors outlive
  // their descendants under plain LRU order too.
  for (size_t i = out.size(); i-- > 0;) lru_.splice(lru_.begin(), lru_, index_[keys[i]]);
  return out;
}

bool HostBlockCache::Contains(const BlockKey& key) const {
  absl::MutexLock lock(&mutex_);
  return index_.contains(key);
}

std::vector<BlockKey> HostBlockCache::Keys() const {
  absl::MutexLock lock(&mutex_);
  std::vector<BlockKey> keys;
  keys.reserve(index_.size());
  for (const Node& node : lru_) keys.push_back(node.key);
  return keys;
}

uint64_t HostBlockCache::bytes() const {
  absl::MutexLock lock(&mutex_);
  return bytes_;
}

uint64_t HostBlockCache::blocks() const {
  absl::MutexLock lock(&mutex_);
  return index_.size();
}

}  // namespace strata::worker
