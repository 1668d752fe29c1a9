// Which DRAM block to evict next: LRU, or S3-FIFO (Yang et al., SOSP'23: a small probationary FIFO, a
// main FIFO with reinsertion of blocks hit since they were queued, and a ghost FIFO of recently evicted
// keys that sends returning keys straight to the main queue). S3-FIFO keeps one-hit wonders (a prefix
// that nobody shares) from pushing out shared prefixes, which LRU does.
//
// "Evict leaves first" (ARCHITECTURE.md): the caller ranks each candidate. A block that is pinned or
// being written is never chosen; a block whose children are still in DRAM (an inner node of a prefix
// chain, known when the writer gave a parent key) is passed over while any other candidate remains.
// Not thread-safe: the store calls it under its mutex.
#ifndef STRATA_KVSTORE_EVICTION_POLICY_H_
#define STRATA_KVSTORE_EVICTION_POLICY_H_

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "common/block_key.h"
#include "kvstore/options.h"

namespace strata::kvstore {

enum class EvictionRank {
  kLeaf,       // evict freely
  kInnerNode,  // has children in DRAM: evict only when nothing else can go
  kPinned,     // never (pinned, reserved, being moved)
};

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  // A block entered DRAM. REQUIRES: not tracked.
  virtual void Insert(const BlockKey& key) = 0;
  // A block in DRAM was read. Untracked keys are ignored.
  virtual void Touch(const BlockKey& key) = 0;
  // A block left DRAM other than by Evict (deleted, or its eviction is under way). Untracked: ignored.
  virtual void Remove(const BlockKey& key) = 0;
  // Chooses and stops tracking the next victim; nullopt when every tracked block ranks kPinned.
  virtual std::optional<BlockKey> Evict(const std::function<EvictionRank(const BlockKey&)>& rank) = 0;
  virtual size_t size() const = 0;
};

std::unique_ptr<EvictionPolicy> MakeEvictionPolicy(EvictionPolicyKind kind);
const char* EvictionPolicyName(EvictionPolicyKind kind);

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_EVICTION_POLICY_H_
