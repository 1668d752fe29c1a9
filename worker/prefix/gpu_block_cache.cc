#include "worker/prefix/gpu_block_cache.h"

namespace strata::worker {

GpuBlockCache::GpuBlockCache(engine::KvPool& pool, Listener stored, Listener evicted)
    : pool_(pool), stored_(std::move(stored)), evicted_(std::move(evicted)) {
  pool_.SetReclaimer([this](int64_t needed) { Reclaim(needed); });
}

GpuBlockCache::~GpuBlockCache() {
  pool_.SetReclaimer(nullptr);
  for (const Node& node : lru_) pool_.Unref({&node.block, 1});
}

void GpuBlockCache::Insert(absl::Span<const BlockKey> keys, std::optional<BlockKey> first_parent,
                           absl::Span<const int32_t> blocks) {
  STRATA_CHECK(keys.size() == blocks.size());
  std::vector<BlockKey> stored;
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::optional<BlockKey> parent = i == 0 ? first_parent : std::optional<BlockKey>(keys[i - 1]);
    if (auto it = index_.find(keys[i]); it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      continue;
    }
    pool_.Ref({&blocks[i], 1});
    lru_.push_front(Node{keys[i], parent, blocks[i], 0});
    index_[keys[i]] = lru_.begin();
    if (parent.has_value()) {
      if (auto p = index_.find(*parent); p != index_.end()) ++p->second->cached_children;
    }
    stored.push_back(keys[i]);
  }
  Publish(stored, {});
  if (!stored.empty() && stored_) stored_(stored);
}

std::vector<int32_t> GpuBlockCache::LongestPrefix(absl::Span<const BlockKey> keys) {
  std::vector<int32_t> out;
  for (const BlockKey& key : keys) {
    auto it = index_.find(key);
    if (it == index_.end()) break;
    out.push_back(it->second->block);
  }
  // From the last to the first, so that the chain's root ends most recently used.
  for (size_t i = out.size(); i-- > 0;) lru_.splice(lru_.begin(), lru_, index_[keys[i]]);
  return out;
}

void GpuBlockCache::Reclaim(int64_t needed) {
  std::vector<BlockKey> evicted;
  // Each time the least recently used leaf that only the cache holds; dropping a leaf can make its
  // parent one, so the search starts again from the old end.
  for (; needed > 0; --needed) {
    auto victim = lru_.end();
    for (auto it = lru_.end(); it != lru_.begin();) {
      --it;
      if (it->cached_children == 0 && pool_.refs(it->block) == 1) {
        victim = it;
        break;
      }
    }
    if (victim == lru_.end()) break;
    evicted.push_back(victim->key);
    Erase(victim);
  }
  Publish({}, evicted);
  if (!evicted.empty() && evicted_) evicted_(evicted);
}

void GpuBlockCache::Publish(absl::Span<const BlockKey> added, absl::Span<const BlockKey> removed) {
  blocks_.store(static_cast<int64_t>(index_.size()), std::memory_order_relaxed);
  if (added.empty() && removed.empty()) return;
  absl::MutexLock lock(&keys_mutex_);
  keys_.insert(added.begin(), added.end());
  for (const BlockKey& key : removed) keys_.erase(key);
}

bool GpuBlockCache::Contains(const BlockKey& key) const {
  absl::MutexLock lock(&keys_mutex_);
  return keys_.contains(key);
}

std::vector<BlockKey> GpuBlockCache::Keys() const {
  absl::MutexLock lock(&keys_mutex_);
  return std::vector<BlockKey>(keys_.begin(), keys_.end());
}

void GpuBlockCache::Erase(List::iterator it) {
  if (it->parent.has_value()) {
    if (auto p = index_.find(*it->parent); p != index_.end() && p->second->cached_children > 0) {
      --p->second->cached_children;
    }
  }
  pool_.Unref({&it->block, 1});
  index_.erase(it->key);
  lru_.erase(it);
}

}  // namespace strata::worker
