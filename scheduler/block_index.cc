#include "scheduler/block_index.h"

#include <cstring>

#include "common/status.h"
#include "common/strings.h"

namespace strata::scheduler {
namespace {

bool IsSlowTier(Tier tier) { return tier == Tier::kHost || tier == Tier::kKvstoreSsd; }

}  // namespace

absl::StatusOr<std::vector<BlockKey>> UnpackKeys(std::string_view packed) {
  if (packed.size() % sizeof(BlockKey) != 0) {
    return absl::InvalidArgumentError(
        StrCat("packed block keys: ", packed.size(), " bytes is not a multiple of 16 (one key is 16 bytes)"));
  }
  std::vector<BlockKey> keys(packed.size() / sizeof(BlockKey));
  for (size_t i = 0; i < keys.size(); ++i) std::memcpy(keys[i].bytes.data(), packed.data() + 16 * i, 16);
  return keys;
}

std::string PackKeys(absl::Span<const BlockKey> keys) {
  std::string out(keys.size() * 16, '\0');
  for (size_t i = 0; i < keys.size(); ++i) std::memcpy(out.data() + 16 * i, keys[i].bytes.data(), 16);
  return out;
}

void BlockIndex::AddHolder(int slot, HolderKind kind) {
  STRATA_CHECK(slot >= 0 && slot < kMaxHolders && !holders_[slot].tracked);
  holders_[slot] = HolderState{};
  holders_[slot].tracked = true;
  holders_[slot].kind = kind;
}

void BlockIndex::DropEntries(int slot) {
  if (holders_[slot].blocks == 0) return;
  for (auto it = entries_.begin(); it != entries_.end();) {
    IndexEntry& entry = it->second;
    if (entry.present.Has(slot)) {
      entry.present.Clear(slot);
      entry.slow.Clear(slot);
      if (entry.present.Empty()) {
        entries_.erase(it++);
        continue;
      }
    }
    ++it;
  }
  holders_[slot].blocks = 0;
}

void BlockIndex::RemoveHolder(int slot) {
  STRATA_CHECK(slot >= 0 && slot < kMaxHolders && holders_[slot].tracked);
  DropEntries(slot);
  holders_[slot] = HolderState{};
}

absl::Status BlockIndex::CheckTier(int slot, Tier tier) const {
  if (slot < 0 || slot >= kMaxHolders || !holders_[slot].tracked) {
    return absl::InvalidArgumentError(StrCat("block index: holder slot ", slot, " is not tracked"));
  }
  const bool worker_tier = tier == Tier::kGpu || tier == Tier::kHost;
  if (worker_tier != (holders_[slot].kind == HolderKind::kWorker)) {
    return absl::InvalidArgumentError(StrCat("block index: a ",
                                             holders_[slot].kind == HolderKind::kWorker ? "worker" : "kvstore",
                                             " cannot hold blocks in tier ", TierName(tier)));
  }
  return absl::OkStatus();
}

void BlockIndex::Store(int slot, bool slow, const BlockKey& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    if (entries_.size() >= capacity_blocks_) {
      ++dropped_stores_;
      return;
    }
    it = entries_.try_emplace(key).first;
  }
  IndexEntry& entry = it->second;
  if (!entry.present.Has(slot)) {
    entry.present.Set(slot);
    ++holders_[slot].blocks;
  }
  if (slow) {
    entry.slow.Set(slot);
  } else {
    entry.slow.Clear(slot);
  }
}

void BlockIndex::Evict(int slot, const BlockKey& key) {
  auto it = entries_.find(key);
  if (it == entries_.end() || !it->second.present.Has(slot)) return;  // a hint: evicting the unknown is fine
  it->second.present.Clear(slot);
  it->second.slow.Clear(slot);
  --holders_[slot].blocks;
  if (it->second.present.Empty()) entries_.erase(it);
}

absl::StatusOr<EventOutcome> BlockIndex::Apply(int slot, uint64_t sequence, EventType type, Tier tier,
                                               absl::Span<const BlockKey> keys) {
  if (type == EventType::kStored) {
    STRATA_RETURN_IF_ERROR(CheckTier(slot, tier));
  } else if (slot < 0 || slot >= kMaxHolders || !holders_[slot].tracked) {
    return absl::InvalidArgumentError(StrCat("block index: holder slot ", slot, " is not tracked"));
  }
  HolderState& holder = holders_[slot];
  if (holder.resync_pending) return EventOutcome::kAwaitingResync;
  const uint64_t expected = holder.sequence_started ? holder.applied_sequence + 1 : 1;
  if (holder.sequence_started && sequence <= holder.applied_sequence) return EventOutcome::kDuplicate;
  if (sequence != expected) {
    holder.resync_pending = true;
    return EventOutcome::kGap;
  }
  holder.sequence_started = true;
  holder.applied_sequence = sequence;
  const bool slow = IsSlowTier(tier);
  for (const BlockKey& key : keys) {
    if (type == EventType::kStored) {
      Store(slot, slow, key);
    } else {
      Evict(slot, key);
    }
  }
  return EventOutcome::kApplied;
}

absl::Status BlockIndex::ApplyInventory(int slot, uint64_t sequence,
                                        absl::Span<const std::pair<Tier, std::vector<BlockKey>>> tiers,
                                        InventoryChunk chunk) {
  for (const auto& [tier, keys] : tiers) STRATA_RETURN_IF_ERROR(CheckTier(slot, tier));
  HolderState& holder = holders_[slot];
  if (chunk.continues && (!holder.inventory_open || holder.inventory_sequence != sequence)) {
    return absl::InvalidArgumentError(
        StrCat("block index: an inventory chunk continues ",
               holder.inventory_open ? StrCat("inventory ", holder.inventory_sequence) : std::string("nothing"),
               " but says sequence ", sequence, " (send a first chunk with continues=false)"));
  }
  if (!chunk.continues) DropEntries(slot);
  for (const auto& [tier, keys] : tiers) {
    for (const BlockKey& key : keys) Store(slot, IsSlowTier(tier), key);
  }
  holder.inventory_open = chunk.more_follow;
  holder.inventory_sequence = sequence;
  holder.resync_pending = chunk.more_follow;
  if (!chunk.more_follow) {
    holder.sequence_started = true;
    holder.applied_sequence = sequence;
  }
  return absl::OkStatus();
}

void BlockIndex::RequestResync(int slot) {
  STRATA_CHECK(slot >= 0 && slot < kMaxHolders && holders_[slot].tracked);
  holders_[slot].resync_pending = true;
}

uint64_t BlockIndex::TableBytes() const {
  return entries_.bucket_count() * (sizeof(std::pair<const BlockKey, IndexEntry>) + 1);
}

}  // namespace strata::scheduler
