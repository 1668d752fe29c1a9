// BlockPayload and PayloadPool: the host memory that KV block payloads live in, between the engine's
// pool (tier G) and the kvstores.
//
// A PayloadPool is one region of host memory cut into slots of one block payload each. The worker
// allocates the region through the engine (page-locked on a GPU: Engine::AllocateHostBytes), so the
// engine's bulk copies move a block straight between its pool and a slot by DMA, and the kvstore tier
// registers it with UCX once, so fetches land in the slots and puts read from them. A payload is born
// in a slot (an export from the engine, a fetch) and lives there while tier H, a queued write or a
// reader holds it: no copy between the tiers.
//
// Each payload is followed in its memory by a trailer of kBlockMacBytes, the block's MAC (block_mac.h):
// the kvstores store payload ‖ trailer as one block, so a put reads and a fetch lands both in place. The
// engine sees only the payload (its exports and imports take one pointer per block, never the stride).
//
// When every slot is taken, Allocate says so (null, counted) and the caller does without: a fetch takes
// fewer blocks, a store writes fewer through to tier H and the kvstores (they stay in tier G). Payloads
// on the heap would be slower by far on the engine thread (fresh pages, staged copies). Thread-safe.
#ifndef STRATA_WORKER_PREFIX_BLOCK_PAYLOAD_H_
#define STRATA_WORKER_PREFIX_BLOCK_PAYLOAD_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "worker/prefix/block_mac.h"

namespace strata::worker {

// One block's bytes ([layer][K|V][kv_head][token][head_dim], Engine::KvPayloadBytes) and its MAC trailer, in
// a pool's slot or on the heap. Shared as std::shared_ptr<const BlockPayload> once filled and sealed:
// immutable from then on.
class BlockPayload {
 public:
  // `bytes` bytes on the heap, each `fill`, and a zero trailer (tests; a payload no pool holds).
  explicit BlockPayload(size_t bytes, std::byte fill = std::byte{0});
  // A copy of `bytes` on the heap, and a zero trailer.
  explicit BlockPayload(absl::Span<const std::byte> bytes);
  // `size` bytes at `data` and the trailer after them, kept valid by `owner` (a pool's slot).
  BlockPayload(std::byte* data, size_t size, std::shared_ptr<void> owner)
      : data_(data), size_(size), owner_(std::move(owner)) {}

  BlockPayload(const BlockPayload&) = delete;
  BlockPayload& operator=(const BlockPayload&) = delete;

  std::byte* data() { return data_; }
  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  absl::Span<const std::byte> bytes() const { return {data_, size_}; }
  // The MAC trailer (block_mac.h), right after the payload.
  absl::Span<std::byte> trailer() { return {data_ + size_, kBlockMacBytes}; }
  absl::Span<const std::byte> trailer() const { return {data_ + size_, kBlockMacBytes}; }
  // Payload and trailer: the block as a kvstore holds it.
  size_t stored_bytes() const { return size_ + kBlockMacBytes; }
  // Same payload bytes (wherever they live).
  friend bool operator==(const BlockPayload& a, const BlockPayload& b) { return a.bytes() == b.bytes(); }

 private:
  std::vector<std::byte> heap_;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
  std::shared_ptr<void> owner_;
};

// Host memory lent to a PayloadPool: `bytes` at `data`, alive while `owner` is.
struct HostRegion {
  std::byte* data = nullptr;
  uint64_t bytes = 0;
  std::shared_ptr<const void> owner;
};

class PayloadPool {
 public:
  // Slots for payloads of `payload_bytes` (> 0) carved from `region` (possibly empty: every payload on
  // the heap), SlotBytes(payload_bytes) apart.
  PayloadPool(HostRegion region, uint64_t payload_bytes);

  // Bytes of region a slot takes: the payload, its trailer, rounded up to a cache line.
  static uint64_t SlotBytes(uint64_t payload_bytes);

  // A free slot's payload (payload_bytes(), contents unspecified), or null when every slot is taken. It keeps
  // the region alive, and its slot taken, until it is destroyed (the pool may go first).
  std::shared_ptr<BlockPayload> Allocate();

  // Whether `payload`'s bytes lie in the region (so UCX may read or write them in place).
  bool InRegion(const BlockPayload& payload) const;
  // The region, for registering it with UCX once.
  std::byte* region_data() const { return state_->region.data; }
  uint64_t region_bytes() const { return state_->region.bytes; }

  uint64_t payload_bytes() const { return state_->payload_bytes; }
  uint64_t slots() const { return state_->slots; }
  uint64_t slots_in_use() const;
  uint64_t misses() const;  // Allocate calls that found every slot taken

 private:
  // Shared with every slot payload: a slot goes back to the free list when its payload dies, even after
  // the PayloadPool object is gone.
  struct State {
    HostRegion region;
    uint64_t payload_bytes = 0;
    uint64_t slot_bytes = 0;  // SlotBytes(payload_bytes)
    uint64_t slots = 0;
    mutable absl::Mutex mutex;
    std::vector<uint32_t> free ABSL_GUARDED_BY(mutex);  // slot indices, the next one handed out at the back
    uint64_t misses ABSL_GUARDED_BY(mutex) = 0;
  };
  std::shared_ptr<State> state_;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_PREFIX_BLOCK_PAYLOAD_H_
