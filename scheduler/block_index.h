// The global block index: block key -> which holders have it, and in which of their tiers.
//
// A hint, never the truth (ARCHITECTURE.md): a stale entry costs a request time (a fetch that misses, a
// prefill that could have been skipped), never correctness, because workers check every block they
// read. It is soft state rebuilt from the holders: each holder's events carry sequence numbers; on a gap
// the holder is asked for its inventory, and an inventory replaces everything the index knew of it.
//
// Compact: a fixed-width 16-byte key maps to two 128-bit holder sets (present, and "in the slower tier
// of that holder": H for a worker, D for a kvstore), 48 bytes a slot in an absl::flat_hash_map; no
// strings, no per-entry allocation. Bounded: at `capacity_blocks` entries, STORED events for keys not
// yet in the index are dropped and counted (dropped_stores()); the index keeps the keys it has, which
// are the older, more shared prefixes, and frees room as holders report evictions.
//
// Not thread-safe: the Scheduler serializes access.
#ifndef STRATA_SCHEDULER_BLOCK_INDEX_H_
#define STRATA_SCHEDULER_BLOCK_INDEX_H_

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/block_key.h"
#include "scheduler/registry.h"

namespace strata::scheduler {

// A set of holder slots (0..kMaxHolders-1).
struct HolderSet {
  std::array<uint64_t, kMaxHolders / 64> words{};

  bool Has(int slot) const { return (words[slot >> 6] >> (slot & 63)) & 1; }
  void Set(int slot) { words[slot >> 6] |= uint64_t{1} << (slot & 63); }
  void Clear(int slot) { words[slot >> 6] &= ~(uint64_t{1} << (slot & 63)); }
  bool Empty() const {
    for (uint64_t w : words) {
      if (w != 0) return false;
    }
    return true;
  }
  HolderSet operator&(const HolderSet& other) const {
    HolderSet out;
    for (size_t i = 0; i < words.size(); ++i) out.words[i] = words[i] & other.words[i];
    return out;
  }
  HolderSet AndNot(const HolderSet& other) const {
    HolderSet out;
    for (size_t i = 0; i < words.size(); ++i) out.words[i] = words[i] & ~other.words[i];
    return out;
  }
};

struct IndexEntry {
  HolderSet present;  // holders that have the block
  HolderSet slow;     // of those, holders that have it in their slower tier (H or D)
};

enum class EventType : uint8_t { kStored, kEvicted };

// What became of an event.
enum class EventOutcome : uint8_t {
  kApplied,
  kDuplicate,       // sequence already applied (a resend): ignored
  kGap,             // a sequence number was skipped: the holder must resend its inventory
  kAwaitingResync,  // dropped: a gap was seen and no inventory has arrived since
};

// Where a chunk sits in a holder's inventory (BlockIndex::ApplyInventory).
struct InventoryChunk {
  bool continues = false;    // adds to the inventory begun by an earlier chunk
  bool more_follow = false;  // not the last chunk
};

class BlockIndex {
 public:
  explicit BlockIndex(uint64_t capacity_blocks) : capacity_blocks_(capacity_blocks) {}

  // Starts tracking `slot` with nothing held and no sequence seen. REQUIRES: the slot is not tracked.
  void AddHolder(int slot, HolderKind kind);
  // Drops every entry naming `slot` and stops tracking it. O(index size).
  void RemoveHolder(int slot);

  // One event of the holder. The first event of a holder that sent no inventory must be sequence 1.
  // InvalidArgument (nothing applied) for a tier the holder's kind cannot have or an untracked slot.
  absl::StatusOr<EventOutcome> Apply(int slot, uint64_t sequence, EventType type, Tier tier,
                                     absl::Span<const BlockKey> keys);

  // One chunk of the holder's inventory as of `sequence`. A chunk that does not continue an inventory
  // replaces everything known of the holder; a continuing one adds to it and must carry the same
  // sequence (InvalidArgument otherwise, nothing applied). Until the last chunk (more_follow false) the
  // holder's events are dropped as kAwaitingResync; the last clears a pending resync.
  absl::Status ApplyInventory(int slot, uint64_t sequence,
                              absl::Span<const std::pair<Tier, std::vector<BlockKey>>> tiers,
                              InventoryChunk chunk = {});

  // Marks the holder as needing a resync (e.g. its heartbeat says it sent events the index never saw).
  void RequestResync(int slot);

  const IndexEntry* Find(const BlockKey& key) const {
    auto it = entries_.find(key);
    return it == entries_.end() ? nullptr : &it->second;
  }

  uint64_t size() const { return entries_.size(); }
  uint64_t capacity_blocks() const { return capacity_blocks_; }
  uint64_t dropped_stores() const { return dropped_stores_; }
  uint64_t holder_blocks(int slot) const { return holders_[slot].blocks; }
  uint64_t applied_sequence(int slot) const { return holders_[slot].applied_sequence; }
  bool resync_pending(int slot) const { return holders_[slot].resync_pending; }
  // Bytes the table holds (slots and control bytes), for the memory gauge.
  uint64_t TableBytes() const;

 private:
  struct HolderState {
    bool tracked = false;
    HolderKind kind = HolderKind::kWorker;
    bool sequence_started = false;  // an inventory or event 1 arrived
    uint64_t applied_sequence = 0;
    bool resync_pending = false;
    bool inventory_open = false;  // a chunked inventory awaits its last chunk
    uint64_t inventory_sequence = 0;
    uint64_t blocks = 0;
  };
  absl::Status CheckTier(int slot, Tier tier) const;
  void Store(int slot, bool slow, const BlockKey& key);
  void Evict(int slot, const BlockKey& key);
  void DropEntries(int slot);

  uint64_t capacity_blocks_;
  uint64_t dropped_stores_ = 0;
  absl::flat_hash_map<BlockKey, IndexEntry> entries_;
  std::array<HolderState, kMaxHolders> holders_{};
};

// Packed keys (16 bytes each, the proto `bytes` layout) <-> keys. InvalidArgument for a length that is
// not a multiple of 16.
absl::StatusOr<std::vector<BlockKey>> UnpackKeys(std::string_view packed);
std::string PackKeys(absl::Span<const BlockKey> keys);

}  // namespace strata::scheduler

#endif  // STRATA_SCHEDULER_BLOCK_INDEX_H_
