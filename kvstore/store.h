// The KV store's state: the block index over the DRAM arena and the SSD tier, two-phase puts, leased
// gets, eviction and promotion. The gRPC service (kvstore/service.h) is a thin translation of this.
//
// A block's life: BeginPut reserves arena space (state kReserved: invisible to readers, never evicted);
// the client writes the bytes by RMA; CommitPut checks the xxh3-64 of every block of the batch and then
// publishes them all at once, or none. BeginGet pins published blocks (promoting SSD-only blocks into
// DRAM first) under a lease; pinned blocks are never evicted or freed until the lease ends or expires.
// Evicting a DRAM block writes it to the SSD tier first unless it is already there (write-back); with
// write-through the commit writes it (through the WAL: it survives kill -9 when acknowledged); writes
// to SSD are synced every --ssd-sync-ms (kvstore/ssd_tier.h's crash contract). With --ssd-bytes, a full SSD tier drops its least recently used SSD-only
// blocks, leaves first: a block whose children are still cached goes only when nothing else can.
//
// Each client (a connection, named by the caller) may hold at most --max-client-bytes reserved or pinned
// at once. Delete removes a block from the index at once; a pinned block's memory is freed when its
// last lease lets go.
//
// Every change of a published block (published, moved between the tiers, gone) goes to the optional
// BlockListener (kvstore/block_events.h), batched as the store changed it.
//
// Thread-safe: one mutex over the index; checksums, SSD reads and SSD writes run outside it.
#ifndef STRATA_KVSTORE_STORE_H_
#define STRATA_KVSTORE_STORE_H_

#include <chrono>
#include <functional>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/block_key.h"
#include "common/log.h"
#include "common/metrics.h"
#include "kvstore/block_events.h"
#include "kvstore/eviction_policy.h"
#include "kvstore/options.h"
#include "kvstore/size_class_allocator.h"
#include "kvstore/ssd_tier.h"

namespace strata::kvstore {

struct PutItem {
  BlockKey key;
  uint64_t size_bytes = 0;
  std::optional<BlockKey> parent;
};

struct PutReservation {
  uint64_t put_id = 0;                           // 0: nothing reserved
  std::vector<std::optional<uint64_t>> offsets;  // per item: arena offset, or nullopt (already stored)
};

struct GetSlot {
  bool present = false;
  Tier tier = Tier::kDram;  // where the block was found
  uint64_t size_bytes = 0;
  uint64_t offset = 0;  // arena offset, valid while the lease holds
  uint64_t checksum = 0;
};

struct GetLease {
  uint64_t lease_id = 0;  // 0: nothing present, nothing pinned
  std::vector<GetSlot> slots;
};

struct LookupSlot {
  bool present = false;
  Tier tier = Tier::kDram;
  uint64_t size_bytes = 0;
};

// What the data plane handed out for one put or lease (the service's per-block rkeys, --rkey-scope=grant).
// The store destroys it when that put or lease ends (commit, abort, end, expiry), under its lock, before
// the blocks it covers are checked, published, released or reused: it never outlives its grant.
class Grant {
 public:
  virtual ~Grant() = default;
};

struct TierCounters {
  uint64_t blocks = 0, used_bytes = 0, capacity_bytes = 0;
  uint64_t hits = 0, misses = 0, evictions = 0, bytes_in = 0, bytes_out = 0;
};

struct StoreStats {
  TierCounters dram, ssd;
  uint64_t arena_allocated_bytes = 0, reserved_bytes = 0, pinned_bytes = 0;
  uint32_t open_leases = 0, open_puts = 0;
  uint64_t checksum_failures = 0, expired_leases = 0, expired_puts = 0;
};

class Store {
 public:
  // `arena` (arena_bytes bytes), `metrics` and `listener` (may be null) outlive the store; `ssd` may be
  // null (no SSD tier). The index is rebuilt from `ssd` (no events: Inventory() reports those blocks).
  // Starts the thread that expires puts and leases.
  static absl::StatusOr<std::unique_ptr<Store>> Create(const Options& options, uint8_t* arena, uint64_t arena_bytes,
                                                       std::unique_ptr<SsdTier> ssd, MetricsRegistry& metrics,
                                                       BlockListener* listener = nullptr);
  ~Store();

  // `client` names the caller's connection for its quota (empty: no quota, in-process callers).
  // InvalidArgument: a size of 0 or above max_block_bytes, a duplicate key. ResourceExhausted: the
  // arena cannot hold the batch even after evicting every unpinned block, or the client would hold more
  // than --max-client-bytes (nothing reserved).
  absl::StatusOr<PutReservation> BeginPut(absl::Span<const PutItem> items, std::string_view client = {});
  // NotFound: no such put (never begun, committed, aborted or expired). InvalidArgument: not one
  // checksum per reserved block. DataLoss: a checksum differs; nothing of the batch is published.
  absl::Status CommitPut(uint64_t put_id, absl::Span<const uint64_t> checksums);
  absl::Status AbortPut(uint64_t put_id);

  // InvalidArgument: a duplicate key. ResourceExhausted: the client would pin more than
  // --max-client-bytes (nothing pinned). Blocks that cannot be promoted (no room, a failed SSD read) are
  // misses; a block whose SSD copy fails its checks is deleted.
  absl::StatusOr<GetLease> BeginGet(absl::Span<const BlockKey> keys, std::string_view client = {});
  absl::Status RenewLease(uint64_t lease_id);  // NotFound when ended or expired
  absl::Status EndGet(uint64_t lease_id);      // NotFound when ended or expired

  // Ties `grant` to the put or lease `id` (see Grant). NotFound, destroying `grant`: `id` has ended.
  absl::Status AttachGrant(uint64_t id, std::unique_ptr<Grant> grant);

  std::vector<LookupSlot> Lookup(absl::Span<const BlockKey> keys);
  uint32_t Delete(absl::Span<const BlockKey> keys);
  StoreStats Stats();

  // Every published block by its fastest tier. `at_cut` runs under the index lock, after the snapshot:
  // the listener has then seen exactly the changes the inventory holds (EventBatcher::Cut goes there).
  BlockInventory Inventory(const std::function<void()>& at_cut = {});

  // The quota of each client (Options::max_client_bytes; 0: none).
  uint64_t max_client_bytes() const { return max_client_bytes_; }

  // Expires puts and leases whose deadline passed; the store's own thread calls it periodically.
  void ExpireNow();

  // Graceful stop, write-back: writes every published block that is only in DRAM to the SSD tier (making
  // room there as an eviction would), stops starting writes at `deadline`, and syncs what it wrote. Call
  // once no more puts arrive. Returns what it wrote and what it left (also logged); nothing without an
  // SSD tier or with write-through.
  struct PersistReport {
    uint64_t written_blocks = 0, written_bytes = 0;
    uint64_t dropped_blocks = 0, dropped_bytes = 0;  // out of time, or no room on SSD, or a failed write
  };
  PersistReport PersistDram(std::chrono::steady_clock::time_point deadline);

 private:
  struct Block;
  struct Txn {
    std::vector<std::shared_ptr<Block>> blocks;
    std::chrono::steady_clock::time_point deadline;
    std::unique_ptr<Grant> grant;
    std::string client;         // whose quota it is charged to (empty: none)
    uint64_t charged_bytes = 0;
  };
  using Clock = std::chrono::steady_clock;

  Store(const Options& options, uint8_t* arena, uint64_t arena_bytes, std::unique_ptr<SsdTier> ssd,
        MetricsRegistry& metrics, BlockListener* listener);
  void RegisterMetrics(MetricsRegistry& metrics);
  absl::Status Recover();

  // Space for `bytes`, evicting as needed. May release and retake mutex_.
  absl::StatusOr<uint64_t> AllocateDram(uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Writes the block's DRAM bytes to the SSD tier, releasing mutex_ meanwhile (`moving` keeps the block
  // in DRAM, readable, not evicted or freed), and returns the SSD tier's answer. REQUIRES: ReserveSsd
  // charged its bytes, which this gives back.
  absl::Status WriteToSsd(Block& block) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Evicts one block; false when nothing is evictable. May release and retake mutex_.
  bool EvictOne() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  EvictionRank Rank(const BlockKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void PublishInDram(const std::shared_ptr<Block>& block) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void FreeDram(Block& block) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void Pin(Block& block) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void Unpin(Block& block) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void ReleaseTxn(Txn& txn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void ReleaseLease(Txn& lease) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void DropFromSsd(const std::shared_ptr<Block>& block) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // The block is on SSD now: counted, tracked by the SSD policy, and a child of its parent there.
  void MarkOnSsd(const std::shared_ptr<Block>& block) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // ResourceExhausted when `client` holding `bytes` more would pass its quota.
  absl::Status CheckQuota(std::string_view client, uint64_t bytes, std::string_view op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void Charge(Txn& txn, uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void Uncharge(Txn& txn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Charges `bytes` about to be written to SSD, first evicting SSD-only blocks (least recently used) down
  // to --ssd-bytes; false when only blocks that are also in DRAM or in use are left.
  bool ReserveSsd(uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Brings an SSD-only block into DRAM; false (a miss) when it cannot.
  bool Promote(const std::shared_ptr<Block>& block) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void ReaperLoop();
  void SyncLoop();  // --ssd-sync-ms
  void NotifyStored(Tier tier, absl::Span<const BlockKey> keys) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    if (listener_ != nullptr) listener_->OnStored(tier, keys);
  }
  void NotifyEvicted(absl::Span<const BlockKey> keys) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    if (listener_ != nullptr) listener_->OnEvicted(keys);
  }

  const Options options_;
  uint8_t* const arena_;
  const uint64_t arena_bytes_;
  const std::unique_ptr<SsdTier> ssd_;
  BlockListener* const listener_;

  absl::Mutex mutex_;
  SizeClassAllocator allocator_ ABSL_GUARDED_BY(mutex_);
  std::unique_ptr<EvictionPolicy> policy_ ABSL_GUARDED_BY(mutex_);      // DRAM
  std::unique_ptr<EvictionPolicy> ssd_policy_ ABSL_GUARDED_BY(mutex_);  // every block on SSD, LRU, leaves first
  absl::flat_hash_map<BlockKey, std::shared_ptr<Block>> index_ ABSL_GUARDED_BY(mutex_);
  absl::flat_hash_map<uint64_t, Txn> puts_ ABSL_GUARDED_BY(mutex_);
  absl::flat_hash_map<uint64_t, Txn> leases_ ABSL_GUARDED_BY(mutex_);
  uint64_t next_id_ ABSL_GUARDED_BY(mutex_) = 1;
  uint64_t dram_blocks_ ABSL_GUARDED_BY(mutex_) = 0, dram_bytes_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t ssd_blocks_ ABSL_GUARDED_BY(mutex_) = 0, ssd_bytes_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t reserved_bytes_ ABSL_GUARDED_BY(mutex_) = 0, pinned_bytes_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t ssd_inflight_bytes_ ABSL_GUARDED_BY(mutex_) = 0;  // being written to SSD
  absl::flat_hash_map<std::string, uint64_t> client_bytes_ ABSL_GUARDED_BY(mutex_);  // reserved + pinned
  uint64_t max_client_bytes_ = 0;
  bool stop_ ABSL_GUARDED_BY(mutex_) = false;
  LogThrottle write_error_log_, promotion_log_;

  struct TierMetrics {
    Counter* hits;
    Counter* misses;
    Counter* evictions;
    Counter* bytes_in;
    Counter* bytes_out;
  };
  TierMetrics dram_metrics_{}, ssd_metrics_{};
  Counter* checksum_failures_ = nullptr;
  Counter* ssd_write_errors_ = nullptr;
  Counter* expired_leases_ = nullptr;
  Counter* expired_puts_ = nullptr;
  Counter* ssd_syncs_ = nullptr;
  Counter* quota_refusals_ = nullptr;

  std::thread reaper_;
  std::thread syncer_;  // with an SSD tier and --ssd-sync-ms
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_STORE_H_
