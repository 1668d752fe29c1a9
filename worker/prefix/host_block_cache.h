// HostBlockCache: tier H, the worker's own bounded cache of KV block payloads in host memory, by block
// key. Least recently used blocks go first, but leaves before their ancestors: a block whose child is
// still cached is skipped while a leaf can go (evicting the middle of a chain strands its descendants).
//
// Every change is reported through the listener (STORED when blocks enter, EVICTED when they leave),
// called under the cache's lock so that a listener that queues events (scheduler::HolderAgent) sees them
// in the cache's order. The listener must not call back into the cache.
//
// Payloads are immutable once inserted and shared: a reader keeps a block alive while it copies it,
// even if it is evicted meanwhile. Thread-safe.
#ifndef STRATA_WORKER_PREFIX_HOST_BLOCK_CACHE_H_
#define STRATA_WORKER_PREFIX_HOST_BLOCK_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/block_key.h"
#include "worker/prefix/block_payload.h"

namespace strata::worker {

struct HostCacheListener {
  std::function<void(absl::Span<const BlockKey>)> stored;
  std::function<void(absl::Span<const BlockKey>)> evicted;
};

class HostBlockCache {
 public:
  // Holds at most `capacity_bytes` of payloads (0: the cache is off).
  HostBlockCache(uint64_t capacity_bytes, HostCacheListener listener);

  struct Entry {
    BlockKey key;
    std::optional<BlockKey> parent;
    std::shared_ptr<const BlockPayload> payload;
  };
  // Inserts the blocks (already present ones are refreshed, not copied); evicts to make room. A block
  // larger than the whole cache is not inserted.
  void Insert(std::vector<Entry> blocks);

  // Drops `key` if cached (a block that failed its check), reported EVICTED; its children stay.
  void Remove(const BlockKey& key);

  // The payloads of the longest run of `keys` (from the first) that is cached, marking them recently used.
  std::vector<std::shared_ptr<const BlockPayload>> LongestPrefix(absl::Span<const BlockKey> keys);

  bool Contains(const BlockKey& key) const;
  std::vector<BlockKey> Keys() const;
  uint64_t bytes() const;
  uint64_t blocks() const;
  uint64_t capacity_bytes() const { return capacity_bytes_; }

 private:
  struct Node {
    BlockKey key;
    std::optional<BlockKey> parent;
    std::shared_ptr<const BlockPayload> payload;
    uint32_t cached_children = 0;
  };
  using List = std::list<Node>;  // front: most recently used
  // Evicts until `needed` more bytes fit; appends what went to `evicted`.
  void MakeRoom(uint64_t needed, std::vector<BlockKey>& evicted) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void Erase(List::iterator it, std::vector<BlockKey>& evicted) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const uint64_t capacity_bytes_;
  const HostCacheListener listener_;
  mutable absl::Mutex mutex_;
  List lru_ ABSL_GUARDED_BY(mutex_);
  absl::flat_hash_map<BlockKey, List::iterator> index_ ABSL_GUARDED_BY(mutex_);
  uint64_t bytes_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_PREFIX_HOST_BLOCK_CACHE_H_
