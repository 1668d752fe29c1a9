// GpuBlockCache: tier G, the index of full KV blocks kept in the engine's paged pool (engine/kv_pool.h)
// after the sequences that computed them, by block key. A request whose prompt starts with cached blocks
// attaches them to its sequence (Engine::NewSequence with a prefix): no copy at all.
//
// The cache holds one pool reference per block. When the pool runs short it calls Reclaim, which drops
// blocks that only the cache holds (no running sequence), least recently used leaves first: a block
// whose child is still cached stays while a leaf can go. Blocks are written through to tier H and the
// kvstores when they are computed, so dropping one from HBM loses nothing below.
//
// Every block entering is reported through `stored`, every block leaving through `evicted` (called on
// the engine thread, under no lock of the cache). Not thread-safe: the engine thread only, except
// blocks(), Contains() and Keys().
#ifndef STRATA_WORKER_PREFIX_GPU_BLOCK_CACHE_H_
#define STRATA_WORKER_PREFIX_GPU_BLOCK_CACHE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/block_key.h"
#include "worker/engine/kv_pool.h"

namespace strata::worker {

class GpuBlockCache {
 public:
  using Listener = std::function<void(absl::Span<const BlockKey>)>;
  // Becomes `pool`'s reclaimer; `pool` must outlive the cache.
  GpuBlockCache(engine::KvPool& pool, Listener stored, Listener evicted);
  // Drops every reference it holds.
  ~GpuBlockCache();
  GpuBlockCache(const GpuBlockCache&) = delete;
  GpuBlockCache& operator=(const GpuBlockCache&) = delete;

  // Caches pool block blocks[i] under keys[i], whose parent is keys[i - 1] (`first_parent` for i = 0):
  // one more pool reference each. A key already cached keeps its block and is refreshed.
  void Insert(absl::Span<const BlockKey> keys, std::optional<BlockKey> first_parent, absl::Span<const int32_t> blocks);

  // The pool blocks of the longest run of `keys` (from the first) that is cached, marking them used.
  std::vector<int32_t> LongestPrefix(absl::Span<const BlockKey> keys);

  // Drops up to `needed` blocks that no sequence holds, least recently used leaves first.
  void Reclaim(int64_t needed);

  // Blocks cached (any thread).
  int64_t blocks() const { return blocks_.load(std::memory_order_relaxed); }
  // Whether `key` is cached, and every cached key (any thread: a holder's inventory, another tier's events).
  bool Contains(const BlockKey& key) const;
  std::vector<BlockKey> Keys() const;

 private:
  struct Node {
    BlockKey key;
    std::optional<BlockKey> parent;
    int32_t block;
    uint32_t cached_children = 0;
  };
  using List = std::list<Node>;  // front: most recently used

  void Erase(List::iterator it);
  // The keys as other threads see them: updated with index_.
  void Publish(absl::Span<const BlockKey> added, absl::Span<const BlockKey> removed);

  engine::KvPool& pool_;
  Listener stored_, evicted_;
  List lru_;
  absl::flat_hash_map<BlockKey, List::iterator> index_;
  std::atomic<int64_t> blocks_{0};
  mutable absl::Mutex keys_mutex_;
  absl::flat_hash_set<BlockKey> keys_ ABSL_GUARDED_BY(keys_mutex_);
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_PREFIX_GPU_BLOCK_CACHE_H_
