// The DRAM arena's allocator: power-of-two size classes from 4 KiB up, split and coalesced as buddies.
//
// KV blocks are powers of two in practice (a 16-token block of Llama-3-8B in BF16 is 2 MiB, a 256-token
// block 32 MiB), so a buddy allocator wastes nothing on them, never fragments them into unusable holes
// once freed (buddies merge back), and allocates and frees in O(log arena). Offsets are relative to the
// arena base. Not thread-safe: the store calls it under its mutex.
#ifndef STRATA_KVSTORE_SIZE_CLASS_ALLOCATOR_H_
#define STRATA_KVSTORE_SIZE_CLASS_ALLOCATOR_H_

#include <cstdint>
#include <optional>
#include <set>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace strata::kvstore {

class SizeClassAllocator {
 public:
  static constexpr int kMinOrder = 12;  // 4 KiB

  // Manages [0, capacity_bytes); capacity is rounded down to 4 KiB.
  explicit SizeClassAllocator(uint64_t capacity_bytes);

  // The offset of a free range of at least `bytes` (rounded up to its size class), lowest address
  // first; nullopt when no free range of that class exists. REQUIRES: bytes > 0.
  std::optional<uint64_t> Allocate(uint64_t bytes);
  // REQUIRES: `offset` came from Allocate and was not freed since.
  void Free(uint64_t offset);

  static uint64_t ClassBytes(uint64_t bytes);
  uint64_t allocated_bytes() const { return allocated_bytes_; }
  uint64_t capacity_bytes() const { return capacity_bytes_; }
  size_t allocations() const { return allocated_.size(); }

 private:
  struct Chunk {
    uint64_t offset;
    int order;
  };
  int MaxOrderAt(uint64_t offset) const;

  uint64_t capacity_bytes_;
  uint64_t allocated_bytes_ = 0;
  std::vector<Chunk> chunks_;                     // top-level power-of-two ranges, largest first
  std::vector<std::set<uint64_t>> free_;          // free block offsets by order
  absl::flat_hash_map<uint64_t, int> allocated_;  // offset -> order
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_SIZE_CLASS_ALLOCATOR_H_
