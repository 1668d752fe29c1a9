// Store: what makes the SSD tier durable (the periodic sync of --ssd-sync-ms, kvstore/ssd_tier.h's crash
// contract) and the graceful stop's persist of write-back's DRAM-only blocks; and the per-client quota of
// --max-client-bytes. Apart from store.cc, which moves blocks between the tiers.
#include <chrono>

#include "common/log.h"
#include "common/status.h"
#include "common/strings.h"
#include "kvstore/store.h"
#include "kvstore/store_block.h"

namespace strata::kvstore {

absl::Status Store::CheckQuota(std::string_view client, uint64_t bytes, std::string_view op) {
  if (client.empty() || max_client_bytes_ == 0) return absl::OkStatus();
  auto it = client_bytes_.find(std::string(client));
  const uint64_t held = it == client_bytes_.end() ? 0 : it->second;
  if (held + bytes <= max_client_bytes_) return absl::OkStatus();
  quota_refusals_->Increment();
  return absl::ResourceExhaustedError(StrCat(
      op, " of ", bytes, " bytes refused: client ", client, " already holds ", held,
      " bytes reserved by uncommitted puts or pinned by get leases, and --max-client-bytes is ", max_client_bytes_,
      " per client connection; commit or abort puts and end leases first, or ask for less at once"));
}

void Store::Charge(Txn& txn, uint64_t bytes) {
  if (txn.client.empty() || bytes == 0) return;
  client_bytes_[txn.client] += bytes;
  txn.charged_bytes += bytes;
}

void Store::Uncharge(Txn& txn) {
  if (txn.charged_bytes == 0) return;
  auto it = client_bytes_.find(txn.client);
  STRATA_CHECK(it != client_bytes_.end() && it->second >= txn.charged_bytes);
  it->second -= txn.charged_bytes;
  if (it->second == 0) client_bytes_.erase(it);
  txn.charged_bytes = 0;
}

void Store::SyncLoop() {
  const auto period = std::chrono::milliseconds(options_.ssd_sync_ms);
  for (;;) {
    {
      absl::MutexLock lock(&mutex_);
      if (mutex_.AwaitWithTimeout(absl::Condition(&stop_), absl::FromChrono(period))) return;
    }
    // A failure is logged (and writes stopped) by the SSD tier; the next period tries again.
    if (ssd_->Sync().ok()) ssd_syncs_->Increment();
  }
}

Store::PersistReport Store::PersistDram(std::chrono::steady_clock::time_point deadline) {
  PersistReport report;
  if (!ssd_ || options_.persist != Persist::kWriteBack) return report;
  const auto start = Clock::now();
  absl::MutexLock lock(&mutex_);
  std::vector<std::shared_ptr<Block>> dram_only;
  for (const auto& [key, block] : index_) {
    if (block->state == Block::State::kPublished && block->in_dram && !block->on_ssd) dram_only.push_back(block);
  }
  for (const std::shared_ptr<Block>& block : dram_only) {
    auto drop = [&report, &block] {
      ++report.dropped_blocks;
      report.dropped_bytes += block->size_bytes;
    };
    if (block->deleted || block->on_ssd || !block->in_dram) continue;  // changed while we wrote others
    if (block->moving || Clock::now() >= deadline || !ReserveSsd(block->size_bytes)) {
      drop();
      continue;
    }
    const absl::Status written = WriteToSsd(*block);  // stays in DRAM and readable meanwhile
    if (block->deleted) {  // deleted while we wrote it: not resurrected; its memory is ours to free
      if (written.ok()) (void)ssd_->Delete(block->key);
      if (block->pins == 0) FreeDram(*block);
      continue;
    }
    if (!written.ok()) {
      ssd_write_errors_->Increment();
      drop();
      continue;
    }
    MarkOnSsd(block);  // and still in DRAM, the faster tier: no event
    ssd_metrics_.bytes_in->Increment(static_cast<double>(block->size_bytes));
    ++report.written_blocks;
    report.written_bytes += block->size_bytes;
  }
  mutex_.Unlock();
  const absl::Status synced = ssd_->Sync().status();
  mutex_.Lock();
  if (!synced.ok()) {  // what it wrote may be lost on a crash now: say so
    report.dropped_blocks += report.written_blocks;
    report.dropped_bytes += report.written_bytes;
    report.written_blocks = report.written_bytes = 0;
  }
  LogInfo(StrCat("event=kvstore_persisted_dram blocks=", report.written_blocks, " bytes=", report.written_bytes,
                 " dropped_blocks=", report.dropped_blocks, " dropped_bytes=", report.dropped_bytes,
                 " seconds=", std::chrono::duration<double>(Clock::now() - start).count(),
                 synced.ok() ? "" : StrCat(" error=ssd_sync message=\"", synced.message(), "\"")));
  return report;
}

}  // namespace strata::kvstore
