// What the store tells the outside about its blocks: a block was published, moved DRAM -> SSD or back,
// or left the store entirely. The scheduler's block index is fed from these (kvstore/scheduler_link.h);
// the store itself knows nothing of the scheduler.
#ifndef STRATA_KVSTORE_BLOCK_EVENTS_H_
#define STRATA_KVSTORE_BLOCK_EVENTS_H_

#include <vector>

#include "absl/types/span.h"
#include "common/block_key.h"

namespace strata::kvstore {

// The store's two tiers.
enum class Tier { kDram, kSsd };

// Receives the store's block changes. A STORED tier is the block's fastest tier in this store after the
// change (a block published in DRAM and written through to SSD is STORED at kDram; DRAM evicting it to
// SSD makes it STORED at kSsd; promotion back makes it kDram again). EVICTED: it left the store.
//
// The store calls these with its index lock held, once per batch of keys it changed together (a commit,
// one eviction), in the order the changes happened: an implementation must only record the keys
// (append to a buffer) and return, never block, log per block or call back into the store.
class BlockListener {
 public:
  virtual ~BlockListener() = default;
  virtual void OnStored(Tier tier, absl::Span<const BlockKey> keys) = 0;
  virtual void OnEvicted(absl::Span<const BlockKey> keys) = 0;
};

// Every published block by its fastest tier.
struct BlockInventory {
  std::vector<BlockKey> dram;
  std::vector<BlockKey> ssd;
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_BLOCK_EVENTS_H_
