#include "kvstore/store.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "common/log.h"
#include "common/status.h"
#include "common/strings.h"
#include "kvstore/checksum.h"
#include "kvstore/store_block.h"

namespace strata::kvstore {

Store::Store(const Options& options, uint8_t* arena, uint64_t arena_bytes, std::unique_ptr<SsdTier> ssd,
             MetricsRegistry& metrics, BlockListener* listener)
    : options_(options),
      arena_(arena),
      arena_bytes_(arena_bytes),
      ssd_(std::move(ssd)),
      listener_(listener),
      allocator_(arena_bytes),
      policy_(MakeEvictionPolicy(options.eviction)),
      ssd_policy_(MakeEvictionPolicy(EvictionPolicyKind::kLru)),
      max_client_bytes_(options.max_client_bytes) {
  RegisterMetrics(metrics);
}

absl::StatusOr<std::unique_ptr<Store>> Store::Create(const Options& options, uint8_t* arena, uint64_t arena_bytes,
                                                     std::unique_ptr<SsdTier> ssd, MetricsRegistry& metrics,
                                                     BlockListener* listener) {
  std::unique_ptr<Store> store(new Store(options, arena, arena_bytes, std::move(ssd), metrics, listener));
  STRATA_RETURN_IF_ERROR(store->Recover());
  Store* raw = store.get();
  store->reaper_ = std::thread([raw] { raw->ReaperLoop(); });
  // Write-through has the WAL for kill -9; periodic syncs there would only cut memtables into small blob
  // files (more compaction, 2.2x the disk writes of the blocks measured).
  if (store->ssd_ && options.persist == Persist::kWriteBack && options.ssd_sync_ms > 0) {
    store->syncer_ = std::thread([raw] { raw->SyncLoop(); });
  }
  return store;
}

Store::~Store() {
  {
    absl::MutexLock lock(&mutex_);
    stop_ = true;
  }
  if (reaper_.joinable()) reaper_.join();
  if (syncer_.joinable()) syncer_.join();
}

absl::Status Store::Recover() {
  if (!ssd_) return absl::OkStatus();
  absl::MutexLock lock(&mutex_);
  uint64_t dropped = 0;
  STRATA_RETURN_IF_ERROR(ssd_->ForEach(
      [this](const BlockKey& key, const SsdBlockMeta& meta) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        auto block = std::make_shared<Block>();
        block->key = key;
        block->size_bytes = meta.size_bytes;
        block->checksum = meta.checksum;
        block->parent = meta.parent;
        block->state = Block::State::kPublished;
        index_[key] = std::move(block);
      },
      &dropped));
  for (const auto& [key, block] : index_) MarkOnSsd(block);  // parents first or not: all are indexed now
  LogInfo(StrCat("event=index_rebuilt ssd_blocks=", ssd_blocks_, " ssd_bytes=", ssd_bytes_,
                 " dropped_malformed=", dropped));
  return absl::OkStatus();
}

EvictionRank Store::Rank(const BlockKey& key) {
  auto it = index_.find(key);
  STRATA_CHECK(it != index_.end());
  const Block& block = *it->second;
  if (block.pins > 0 || block.moving || block.state != Block::State::kPublished || !block.in_dram) {
    return EvictionRank::kPinned;
  }
  return block.dram_children > 0 ? EvictionRank::kInnerNode : EvictionRank::kLeaf;
}

bool Store::EvictOne() {
  std::optional<BlockKey> victim_key =
      policy_->Evict([this](const BlockKey& key) ABSL_NO_THREAD_SAFETY_ANALYSIS { return Rank(key); });
  if (!victim_key) return false;
  std::shared_ptr<Block> victim = index_.at(*victim_key);
  if (ssd_ && !victim->on_ssd && !ReserveSsd(victim->size_bytes)) {
    LogWarning(StrCat("event=ssd_full action=dropped key=", victim->key.Hex(), " ssd_bytes=", ssd_bytes_,
                      " hint=\"every SSD block is also in DRAM or in use; raise --ssd-bytes\""));
  } else if (ssd_ && !victim->on_ssd) {
    // Write-back. The block stays readable in DRAM meanwhile; `moving` keeps it from being freed.
    const absl::Status written = WriteToSsd(*victim);
    if (written.ok()) {
      if (victim->deleted) {
        (void)ssd_->Delete(victim->key);  // deleted while we wrote it: do not resurrect it
      } else {
        MarkOnSsd(victim);
        ssd_metrics_.bytes_in->Increment(static_cast<double>(victim->size_bytes));
      }
    } else {
      ssd_write_errors_->Increment();
      if (uint64_t held_back; write_error_log_.Allow(&held_back)) {  // a failing disk fails every eviction
        LogError(StrCat("error=ssd_write_back key=", victim->key.Hex(), " held_back=", held_back,
                        " message=\"", written.message(), "\""));
      }
    }
    if (victim->pins > 0) {  // a reader pinned it while we wrote: keep it in DRAM
      if (!victim->deleted) policy_->Insert(victim->key);
      return true;
    }
  }
  dram_metrics_.evictions->Increment();
  FreeDram(*victim);
  if (!victim->on_ssd && !victim->deleted) {
    index_.erase(victim->key);  // no SSD tier, or the write failed: the block is gone
    victim->deleted = true;
    NotifyEvicted({&victim->key, 1});
  } else if (!victim->deleted) {
    NotifyStored(Tier::kSsd, {&victim->key, 1});
  }
  return true;
}

absl::Status Store::WriteToSsd(Block& block) {
  block.moving = true;
  const SsdBlockMeta meta{block.size_bytes, block.checksum, block.parent};
  const uint8_t* data = arena_ + block.offset;
  mutex_.Unlock();
  const absl::Status written = ssd_->Put(block.key, meta, data);
  mutex_.Lock();
  block.moving = false;
  ssd_inflight_bytes_ -= block.size_bytes;
  return written;
}

absl::StatusOr<uint64_t> Store::AllocateDram(uint64_t bytes) {
  for (;;) {
    if (std::optional<uint64_t> offset = allocator_.Allocate(bytes)) return *offset;
    if (!EvictOne()) {
      return absl::ResourceExhaustedError(StrCat(
          "DRAM arena full: ", bytes, " bytes wanted, ", allocator_.allocated_bytes(), " of ", arena_bytes_,
          " allocated, ", pinned_bytes_, " pinned by leases, ", reserved_bytes_, " reserved by puts; retry later"));
    }
  }
}

void Store::PublishInDram(const std::shared_ptr<Block>& block) {
  block->in_dram = true;
  ++dram_blocks_;
  dram_bytes_ += block->size_bytes;
  policy_->Insert(block->key);
  if (block->parent) {
    auto parent = index_.find(*block->parent);
    if (parent != index_.end()) {
      ++parent->second->dram_children;
      block->counted_parent = parent->second;
    }
  }
}

void Store::FreeDram(Block& block) {
  if (!block.in_dram) return;
  allocator_.Free(block.offset);
  block.in_dram = false;
  if (block.state == Block::State::kPublished) {
    --dram_blocks_;
    dram_bytes_ -= block.size_bytes;
  }
  policy_->Remove(block.key);
  if (block.counted_parent) {
    --block.counted_parent->dram_children;
    block.counted_parent.reset();
  }
}

void Store::Pin(Block& block) {
  if (block.pins++ == 0) pinned_bytes_ += block.size_bytes;
}

void Store::Unpin(Block& block) {
  STRATA_CHECK(block.pins > 0);
  if (--block.pins > 0) return;
  pinned_bytes_ -= block.size_bytes;
  if (block.deleted) FreeDram(block);
}

bool Store::ReserveSsd(uint64_t bytes) {
  while (options_.ssd_bytes > 0 && ssd_bytes_ + ssd_inflight_bytes_ + bytes > options_.ssd_bytes) {
    // Only SSD-only blocks go: dropping the SSD copy of a DRAM block would break write-through. Leaves
    // first, as in DRAM: a block whose children are cached (on SSD or in DRAM) goes only when nothing
    // else can, since dropping it strands them.
    std::optional<BlockKey> victim_key = ssd_policy_->Evict([this](const BlockKey& key) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      auto it = index_.find(key);
      STRATA_CHECK(it != index_.end());
      const Block& block = *it->second;
      if (block.in_dram || block.moving || block.pins > 0) return EvictionRank::kPinned;
      return block.ssd_children > 0 || block.dram_children > 0 ? EvictionRank::kInnerNode : EvictionRank::kLeaf;
    });
    if (!victim_key) return false;
    std::shared_ptr<Block> victim = index_.at(*victim_key);
    DropFromSsd(victim);
    index_.erase(victim->key);
    victim->deleted = true;
    ssd_metrics_.evictions->Increment();
    NotifyEvicted({&victim->key, 1});
  }
  ssd_inflight_bytes_ += bytes;
  return true;
}

void Store::MarkOnSsd(const std::shared_ptr<Block>& block) {
  block->on_ssd = true;
  ssd_policy_->Insert(block->key);
  ++ssd_blocks_;
  ssd_bytes_ += block->size_bytes;
  if (block->parent && !block->ssd_counted_parent) {
    auto parent = index_.find(*block->parent);
    if (parent != index_.end()) {
      ++parent->second->ssd_children;
      block->ssd_counted_parent = parent->second;
    }
  }
}

void Store::DropFromSsd(const std::shared_ptr<Block>& block) {
  if (!block->on_ssd) return;
  block->on_ssd = false;
  if (block->ssd_counted_parent) {
    --block->ssd_counted_parent->ssd_children;
    block->ssd_counted_parent.reset();
  }
  ssd_policy_->Remove(block->key);
  --ssd_blocks_;
  ssd_bytes_ -= block->size_bytes;
  const absl::Status status = ssd_->Delete(block->key);
  if (!status.ok()) LogError(StrCat("error=ssd_delete key=", block->key.Hex(), " message=\"", status.message(), "\""));
}

absl::StatusOr<PutReservation> Store::BeginPut(absl::Span<const PutItem> items, std::string_view client) {
  absl::flat_hash_set<BlockKey> seen;
  uint64_t total_bytes = 0, block_bytes = 0;
  for (const PutItem& item : items) {
    if (item.size_bytes == 0) return absl::InvalidArgumentError(StrCat("block ", item.key.Hex(), ": size 0"));
    if (item.size_bytes > options_.max_block_bytes) {
      return absl::InvalidArgumentError(StrCat("block ", item.key.Hex(), ": size ", item.size_bytes,
                                               " exceeds --max-block-bytes ", options_.max_block_bytes));
    }
    if (!seen.insert(item.key).second) {
      return absl::InvalidArgumentError(StrCat("block ", item.key.Hex(), " appears twice in one put"));
    }
    total_bytes += SizeClassAllocator::ClassBytes(item.size_bytes);
    block_bytes += item.size_bytes;
  }
  if (total_bytes > arena_bytes_) {
    return absl::ResourceExhaustedError(
        StrCat("put of ", total_bytes, " bytes (size classes) exceeds the DRAM arena of ", arena_bytes_));
  }
  absl::MutexLock lock(&mutex_);
  STRATA_RETURN_IF_ERROR(CheckQuota(client, block_bytes, "put"));
  PutReservation reservation;
  reservation.offsets.resize(items.size());
  Txn txn;
  txn.client = std::string(client);
  for (size_t i = 0; i < items.size(); ++i) {
    const PutItem& item = items[i];
    if (index_.contains(item.key)) continue;  // stored, or being written by another put
    absl::StatusOr<uint64_t> offset = AllocateDram(item.size_bytes);
    if (offset.ok() && index_.contains(item.key)) {  // another put took the key while we evicted
      allocator_.Free(*offset);
      continue;
    }
    if (!offset.ok()) {
      ReleaseTxn(txn);
      return offset.status();
    }
    auto block = std::make_shared<Block>();
    block->key = item.key;
    block->size_bytes = item.size_bytes;
    block->parent = item.parent;
    block->in_dram = true;
    block->offset = *offset;
    reserved_bytes_ += item.size_bytes;
    index_[item.key] = block;
    txn.blocks.push_back(std::move(block));
    reservation.offsets[i] = *offset;
  }
  if (txn.blocks.empty()) return reservation;
  uint64_t reserved = 0;
  for (const auto& block : txn.blocks) reserved += block->size_bytes;
  Charge(txn, reserved);
  txn.deadline = Clock::now() + std::chrono::milliseconds(options_.put_ttl_ms);
  reservation.put_id = next_id_++;
  puts_.emplace(reservation.put_id, std::move(txn));
  return reservation;
}

void Store::ReleaseTxn(Txn& txn) {
  Uncharge(txn);
  txn.grant.reset();  // before the blocks can be reused
  for (const std::shared_ptr<Block>& block : txn.blocks) {
    reserved_bytes_ -= block->size_bytes;
    FreeDram(*block);
    auto it = index_.find(block->key);
    if (it != index_.end() && it->second == block) index_.erase(it);
  }
  txn.blocks.clear();
}

absl::Status Store::CommitPut(uint64_t put_id, absl::Span<const uint64_t> checksums) {
  Txn txn;
  {
    absl::MutexLock lock(&mutex_);
    auto it = puts_.find(put_id);
    if (it == puts_.end()) {
      return absl::NotFoundError(StrCat("put ", put_id,
                                        ": no such put (never begun, already committed or "
                                        "aborted, or expired after ",
                                        options_.put_ttl_ms, " ms)"));
    }
    if (checksums.size() != it->second.blocks.size()) {
      return absl::InvalidArgumentError(StrCat("put ", put_id, ": ", checksums.size(), " checksums for ",
                                               it->second.blocks.size(), " reserved blocks"));
    }
    txn = std::move(it->second);
    puts_.erase(it);    // ours now: the reaper cannot expire it while we check
    txn.grant.reset();  // no writes from here on: what we check is what we publish
    Uncharge(txn);      // the reservation ends here, published or freed
  }
  // The blocks are reserved (invisible, never evicted): read them without the lock.
  std::string bad;
  for (size_t i = 0; i < txn.blocks.size(); ++i) {
    const Block& block = *txn.blocks[i];
    if (BlockChecksum(arena_ + block.offset, block.size_bytes) != checksums[i]) {
      absl::StrAppend(&bad, bad.empty() ? "" : ",", block.key.Hex());
    }
  }
  absl::Status persisted = absl::OkStatus();
  const bool write_through = bad.empty() && ssd_ && options_.persist == Persist::kWriteThrough;
  uint64_t batch_bytes = 0;
  for (const auto& block : txn.blocks) batch_bytes += block->size_bytes;
  if (write_through) {
    absl::MutexLock lock(&mutex_);
    if (!ReserveSsd(batch_bytes)) {
      ReleaseTxn(txn);
      return absl::ResourceExhaustedError(StrCat("put ", put_id, ": the SSD tier (--ssd-bytes ", options_.ssd_bytes,
                                                 ") has no room for ", batch_bytes,
                                                 " bytes: its blocks are in DRAM or in use; nothing was stored"));
    }
  }
  if (write_through) {
    for (size_t i = 0; i < txn.blocks.size() && persisted.ok(); ++i) {
      const Block& block = *txn.blocks[i];
      persisted =
          ssd_->Put(block.key, SsdBlockMeta{block.size_bytes, checksums[i], block.parent}, arena_ + block.offset);
    }
  }
  absl::MutexLock lock(&mutex_);
  if (write_through) ssd_inflight_bytes_ -= batch_bytes;
  if (!bad.empty() || !persisted.ok()) {
    if (!bad.empty()) checksum_failures_->Increment();
    if (!persisted.ok()) {
      ssd_write_errors_->Increment();
      for (const auto& block : txn.blocks) (void)ssd_->Delete(block->key);
    }
    ReleaseTxn(txn);
    if (!persisted.ok()) return persisted;
    return absl::DataLossError(
        StrCat("put ", put_id, ": checksum mismatch for block(s) ", bad, "; nothing of this put was stored"));
  }
  std::vector<BlockKey> published;
  published.reserve(txn.blocks.size());
  for (size_t i = 0; i < txn.blocks.size(); ++i) {
    const std::shared_ptr<Block>& block = txn.blocks[i];
    published.push_back(block->key);
    reserved_bytes_ -= block->size_bytes;
    block->checksum = checksums[i];
    block->state = Block::State::kPublished;
    block->in_dram = false;  // PublishInDram counts it
    PublishInDram(block);
    dram_metrics_.bytes_in->Increment(static_cast<double>(block->size_bytes));
    if (write_through) {
      MarkOnSsd(block);
      ssd_metrics_.bytes_in->Increment(static_cast<double>(block->size_bytes));
    }
  }
  NotifyStored(Tier::kDram, published);
  return absl::OkStatus();
}

absl::Status Store::AbortPut(uint64_t put_id) {
  absl::MutexLock lock(&mutex_);
  auto it = puts_.find(put_id);
  if (it == puts_.end()) return absl::NotFoundError(StrCat("put ", put_id, ": no such put"));
  ReleaseTxn(it->second);
  puts_.erase(it);
  return absl::OkStatus();
}

bool Store::Promote(const std::shared_ptr<Block>& block) {
  absl::StatusOr<uint64_t> offset = AllocateDram(block->size_bytes);
  if (!offset.ok()) {
    if (uint64_t held_back; promotion_log_.Allow(&held_back)) {
      LogWarning(StrCat("event=promotion_skipped key=", block->key.Hex(), " held_back=", held_back, " reason=\"",
                        offset.status().message(), "\""));
    }
    return false;
  }
  // AllocateDram may have let go of the lock (a write-back): another get may have promoted the block
  // meanwhile, or be reading it now. Wait for that reader, and then use its copy.
  mutex_.Await(absl::Condition(
      +[](Block* b) { return !b->moving || b->in_dram; }, block.get()));
  if (block->in_dram || block->deleted || !block->on_ssd) {
    allocator_.Free(*offset);
    return block->in_dram && !block->deleted;
  }
  block->moving = true;
  const SsdBlockMeta meta{block->size_bytes, block->checksum, block->parent};
  mutex_.Unlock();
  const absl::Status read = ssd_->Read(block->key, meta, arena_ + *offset);
  mutex_.Lock();
  block->moving = false;
  if (!read.ok()) {
    allocator_.Free(*offset);
    if (block->deleted) return false;  // deleted (and dropped from SSD) while we read it
    if (read.code() == absl::StatusCode::kDataLoss) {
      checksum_failures_->Increment();
      LogError(
          StrCat("error=ssd_block_corrupt key=", block->key.Hex(), " action=deleted message=\"", read.message(), "\""));
      DropFromSsd(block);
      index_.erase(block->key);
      block->deleted = true;
      NotifyEvicted({&block->key, 1});
    } else {
      LogError(StrCat("error=ssd_read key=", block->key.Hex(), " message=\"", read.message(), "\""));
    }
    return false;
  }
  if (block->deleted) {
    allocator_.Free(*offset);
    return false;
  }
  block->offset = *offset;
  PublishInDram(block);
  NotifyStored(Tier::kDram, {&block->key, 1});
  ssd_policy_->Touch(block->key);
  ssd_metrics_.bytes_out->Increment(static_cast<double>(block->size_bytes));
  return true;
}

absl::StatusOr<GetLease> Store::BeginGet(absl::Span<const BlockKey> keys, std::string_view client) {
  absl::flat_hash_set<BlockKey> seen;
  for (const BlockKey& key : keys) {
    if (!seen.insert(key).second)
      return absl::InvalidArgumentError(StrCat("block ", key.Hex(), " appears twice in one get"));
  }
  absl::MutexLock lock(&mutex_);
  GetLease lease;
  lease.slots.resize(keys.size());
  Txn pins;
  pins.client = std::string(client);
  uint64_t pinned = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = index_.find(keys[i]);
    if (it == index_.end() || it->second->state != Block::State::kPublished) {
      dram_metrics_.misses->Increment();
      if (ssd_) ssd_metrics_.misses->Increment();
      continue;
    }
    std::shared_ptr<Block> block = it->second;
    // Another get may be promoting it: wait for that rather than reading SSD twice.
    mutex_.Await(absl::Condition(
        +[](Block* b) { return !b->moving || b->in_dram; }, block.get()));
    if (block->deleted) {
      dram_metrics_.misses->Increment();
      continue;
    }
    Tier tier = Tier::kDram;
    if (block->in_dram) {
      dram_metrics_.hits->Increment();
      policy_->Touch(block->key);
    } else {
      dram_metrics_.misses->Increment();
      if (!ssd_ || !block->on_ssd || !Promote(block)) {
        if (ssd_) ssd_metrics_.misses->Increment();
        continue;
      }
      ssd_metrics_.hits->Increment();
      tier = Tier::kSsd;
    }
    if (absl::Status quota = CheckQuota(client, pinned + block->size_bytes, "get"); !quota.ok()) {
      ReleaseLease(pins);  // nothing of this get stays pinned
      return quota;
    }
    pinned += block->size_bytes;
    Pin(*block);
    dram_metrics_.bytes_out->Increment(static_cast<double>(block->size_bytes));
    lease.slots[i] = GetSlot{true, tier, block->size_bytes, block->offset, block->checksum};
    pins.blocks.push_back(std::move(block));
  }
  if (pins.blocks.empty()) return lease;
  Charge(pins, pinned);
  pins.deadline = Clock::now() + std::chrono::milliseconds(options_.lease_ttl_ms);
  lease.lease_id = next_id_++;
  leases_.emplace(lease.lease_id, std::move(pins));
  return lease;
}

absl::Status Store::RenewLease(uint64_t lease_id) {
  absl::MutexLock lock(&mutex_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) {
    return absl::NotFoundError(
        StrCat("lease ", lease_id, ": no such lease (ended, or expired after ", options_.lease_ttl_ms, " ms)"));
  }
  it->second.deadline = Clock::now() + std::chrono::milliseconds(options_.lease_ttl_ms);
  return absl::OkStatus();
}

absl::Status Store::AttachGrant(uint64_t id, std::unique_ptr<Grant> grant) {
  absl::MutexLock lock(&mutex_);
  auto put = puts_.find(id);
  Txn* txn = put != puts_.end() ? &put->second : nullptr;
  if (txn == nullptr) {
    auto lease = leases_.find(id);
    if (lease != leases_.end()) txn = &lease->second;
  }
  if (txn == nullptr) return absl::NotFoundError(StrCat("put or lease ", id, ": ended before its grant was made"));
  STRATA_CHECK(txn->grant == nullptr);
  txn->grant = std::move(grant);
  return absl::OkStatus();
}

void Store::ReleaseLease(Txn& lease) {
  Uncharge(lease);
  lease.grant.reset();  // before the blocks can be evicted or freed
  for (const std::shared_ptr<Block>& block : lease.blocks) Unpin(*block);
  lease.blocks.clear();
}

absl::Status Store::EndGet(uint64_t lease_id) {
  absl::MutexLock lock(&mutex_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) {
    return absl::NotFoundError(StrCat("lease ", lease_id, ": no such lease (ended, or expired after ",
                                      options_.lease_ttl_ms,
                                      " ms: the blocks may have been evicted "
                                      "while read, so do not use what was read)"));
  }
  ReleaseLease(it->second);
  leases_.erase(it);
  return absl::OkStatus();
}

std::vector<LookupSlot> Store::Lookup(absl::Span<const BlockKey> keys) {
  absl::MutexLock lock(&mutex_);
  std::vector<LookupSlot> slots(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = index_.find(keys[i]);
    if (it == index_.end() || it->second->state != Block::State::kPublished) continue;
    const Block& block = *it->second;
    slots[i] = LookupSlot{true, block.in_dram ? Tier::kDram : Tier::kSsd, block.size_bytes};
  }
  return slots;
}

uint32_t Store::Delete(absl::Span<const BlockKey> keys) {
  absl::MutexLock lock(&mutex_);
  std::vector<BlockKey> deleted_keys;
  for (const BlockKey& key : keys) {
    auto it = index_.find(key);
    if (it == index_.end() || it->second->state != Block::State::kPublished) continue;
    std::shared_ptr<Block> block = it->second;
    index_.erase(it);
    block->deleted = true;
    if (ssd_) DropFromSsd(block);
    policy_->Remove(block->key);
    // Pinned or mid-move: freed by Unpin or by the mover when it sees `deleted`.
    if (block->pins == 0 && !block->moving) FreeDram(*block);
    deleted_keys.push_back(key);
  }
  NotifyEvicted(deleted_keys);
  return static_cast<uint32_t>(deleted_keys.size());
}

BlockInventory Store::Inventory(const std::function<void()>& at_cut) {
  absl::MutexLock lock(&mutex_);
  BlockInventory inventory;
  inventory.dram.reserve(dram_blocks_);
  inventory.ssd.reserve(ssd_blocks_);
  for (const auto& [key, block] : index_) {
    if (block->state != Block::State::kPublished) continue;
    if (block->in_dram) {
      inventory.dram.push_back(key);
    } else if (block->on_ssd) {
      inventory.ssd.push_back(key);
    }
  }
  if (at_cut) at_cut();
  return inventory;
}

void Store::ExpireNow() {
  absl::MutexLock lock(&mutex_);
  const Clock::time_point now = Clock::now();
  for (auto it = puts_.begin(); it != puts_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    LogWarning(StrCat("event=put_expired put=", it->first, " blocks=", it->second.blocks.size()));
    expired_puts_->Increment();
    ReleaseTxn(it->second);
    puts_.erase(it++);
  }
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    LogWarning(StrCat("event=lease_expired lease=", it->first, " blocks=", it->second.blocks.size()));
    expired_leases_->Increment();
    ReleaseLease(it->second);
    leases_.erase(it++);
  }
}

void Store::ReaperLoop() {
  const auto period = std::chrono::milliseconds(
      std::max<uint32_t>(5, std::min<uint32_t>(1000, std::min(options_.put_ttl_ms, options_.lease_ttl_ms) / 4)));
  for (;;) {
    {
      absl::MutexLock lock(&mutex_);
      if (mutex_.AwaitWithTimeout(absl::Condition(&stop_), absl::FromChrono(period))) return;
    }
    ExpireNow();
  }
}

}  // namespace strata::kvstore
