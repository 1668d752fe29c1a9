#include "worker/prefix/kvstore_tier.h"

#include <cstdlib>
#include <cstring>
#include <future>

#include "absl/container/flat_hash_set.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/strings.h"

namespace strata::worker {
namespace {

constexpr uint64_t kArenaAlignment = 2ull << 20;  // huge-page friendly; UCX registers whole pages
constexpr int kWriteConnectAttempts = 8;          // times reconnect_interval: ~2 s by default
constexpr uint64_t kWriteBatchBytes = 256ull << 20;  // of blocks put at once (at least one block)

// Codes by which the client says the daemon or the transfer failed (retry later); any other code is the
// daemon's answer to the request itself (refused: invalid, too large), which says nothing of its health.
bool IsUnreachable(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status) || absl::IsCancelled(status);
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvStoreTier>> KvStoreTier::Create(const KvStoreTierOptions& options,
                                                                 KvStoreTierMetrics metrics) {
  if (options.addresses.empty()) return absl::InvalidArgumentError("kvstore tier: no kvstore address");
  if (options.block_bytes == 0) return absl::InvalidArgumentError("kvstore tier: block_bytes is 0");
  if (options.fetch_threads < 1) return absl::InvalidArgumentError("kvstore tier: fetch_threads must be at least 1");
  if (options.mac == nullptr) return absl::InvalidArgumentError("kvstore tier: no MAC key");
  std::unique_ptr<KvStoreTier> tier(new KvStoreTier(options, metrics));
  if (options.payloads != nullptr && options.payloads->payload_bytes() != options.block_bytes) {
    return absl::InvalidArgumentError(StrCat("kvstore tier: payload slots of ", options.payloads->payload_bytes(),
                                             " bytes for blocks of ", options.block_bytes));
  }
  tier->payloads_ = options.payloads;
  if (tier->payloads_ == nullptr || tier->payloads_->slots() == 0) {
    uint64_t bytes = std::max(options.staging_bytes, PayloadPool::SlotBytes(options.block_bytes));
    bytes = (bytes + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
    void* memory = std::aligned_alloc(kArenaAlignment, bytes);
    if (memory == nullptr) {
      return absl::ResourceExhaustedError(StrCat("kvstore tier: cannot allocate ", bytes, " bytes of payloads"));
    }
    std::memset(memory, 0, bytes);  // fault it in now, not on the first fetch
    std::shared_ptr<const void> owner(memory, [](const void* p) { std::free(const_cast<void*>(p)); });
    tier->payloads_ = std::make_shared<PayloadPool>(HostRegion{static_cast<std::byte*>(memory), bytes, std::move(owner)},
                                                    options.block_bytes);
  }
  for (const std::string& address : options.addresses) {
    auto shard = std::make_unique<Shard>();
    shard->address = address;
    tier->shards_.push_back(std::move(shard));
  }
  // Connect now where the daemons are up; the others are retried on use.
  for (auto& shard : tier->shards_) tier->Client(*shard);
  tier->writer_ = std::thread([raw = tier.get()] { raw->WriterLoop(); });
  for (int i = 0; i < options.fetch_threads; ++i) {
    tier->fetchers_.emplace_back([raw = tier.get()] { raw->FetchLoop(); });
  }
  return tier;
}

KvStoreTier::KvStoreTier(const KvStoreTierOptions& options, KvStoreTierMetrics metrics)
    : options_(options), metrics_(metrics), placement_(options.addresses) {}

KvStoreTier::~KvStoreTier() {
  {
    absl::MutexLock lock(&queue_mutex_);
    stop_ = true;
  }
  if (writer_.joinable()) writer_.join();
  {
    absl::MutexLock lock(&fetch_mutex_);
    stop_fetching_ = true;
  }
  for (std::thread& fetcher : fetchers_) fetcher.join();
  // Clients (which unregister the region) go before the region.
  shards_.clear();
}

kvstore::KvStoreClient* KvStoreTier::Client(Shard& shard) {
  absl::MutexLock lock(&shard.mutex);
  if (shard.client != nullptr) return shard.client.get();
  const auto now = std::chrono::steady_clock::now();
  if (now < shard.retry_at) return nullptr;
  kvstore::ClientOptions client_options;
  client_options.address = shard.address;
  client_options.rpc_timeout = options_.rpc_timeout;
  client_options.transfer_timeout = options_.transfer_timeout;
  client_options.peer_failure = options_.peer_failure;
  client_options.security = options_.security;
  absl::StatusOr<std::unique_ptr<kvstore::KvStoreClient>> client = kvstore::KvStoreClient::Connect(client_options);
  absl::Status status = client.status();
  if (status.ok()) status = (*client)->RegisterMemory(payloads_->region_data(), payloads_->region_bytes());
  if (!status.ok()) {
    shard.retry_at = now + options_.reconnect_interval;
    shard.connect_error = std::string(status.message());
    if (shard.healthy) {
      shard.healthy = false;
      LogWarning(StrCat("event=kvstore_unreachable kvstore=", shard.address, " op=connect message=\"", status.message(),
                        "\" effect=recompute"));
    }
    return nullptr;
  }
  if (!shard.healthy) {
    shard.healthy = true;
    LogInfo(StrCat("event=kvstore_reachable kvstore=", shard.address));
  }
  shard.client = *std::move(client);
  return shard.client.get();
}

void KvStoreTier::MarkFailure(Shard& shard, const absl::Status& status, std::string_view op) {
  absl::MutexLock lock(&shard.mutex);
  if (!shard.healthy) return;
  shard.healthy = false;
  LogWarning(StrCat("event=kvstore_unreachable kvstore=", shard.address, " op=", op, " message=\"", status.message(),
                    "\" effect=recompute"));
}

void KvStoreTier::MarkPutRejected(Shard& shard, const absl::Status& status, size_t blocks) {
  absl::MutexLock lock(&shard.mutex);
  // The daemon answered: it is reachable, whatever its health said.
  if (!shard.healthy) {
    shard.healthy = true;
    LogInfo(StrCat("event=kvstore_reachable kvstore=", shard.address));
  }
  if (shard.rejecting_puts) return;
  shard.rejecting_puts = true;
  LogWarning(StrCat("error=kvstore_put_rejected kvstore=", shard.address,
                    " code=", absl::StatusCodeToString(status.code()), " blocks=", blocks, " message=\"",
                    status.message(), "\" effect=blocks_not_written"));
}

void KvStoreTier::MarkPutAccepted(Shard& shard) {
  absl::MutexLock lock(&shard.mutex);
  shard.rejecting_puts = false;
}

void KvStoreTier::CountWriteFailure(double blocks, std::string_view cause, std::string_view kvstore,
                                    std::string_view message) {
  if (metrics_.write_failures != nullptr) metrics_.write_failures->Increment(blocks);
  if (uint64_t held_back = 0; write_failure_log_.Allow(&held_back)) {
    LogWarning(StrCat("error=kvstore_write_failed cause=", cause, " kvstore=", kvstore, " blocks=", blocks,
                      " held_back=", held_back, " message=\"", message, "\" effect=blocks_not_written"));
  }
}

void KvStoreTier::MarkHealthy(Shard& shard) {
  absl::MutexLock lock(&shard.mutex);
  if (shard.healthy) return;
  shard.healthy = true;
  LogInfo(StrCat("event=kvstore_reachable kvstore=", shard.address));
}

bool KvStoreTier::CheckFetched(size_t s, const BlockKey& key, uint64_t stored_bytes, const BlockPayload& payload) {
  if (stored_bytes != payload.stored_bytes()) {
    // Another writer's block under this key (a bug somewhere, or a different layout).
    if (metrics_.fetch_failures != nullptr) metrics_.fetch_failures->Increment();
    LogWarning(StrCat("error=kvstore_block_size kvstore=", shards_[s]->address, " key=", key.Hex(),
                      " bytes=", stored_bytes, " expected=", payload.stored_bytes(), " effect=recompute,delete"));
    return false;
  }
  if (!options_.mac->Verify(key, payload.bytes(), payload.trailer())) {
    // Checksummed correctly (the client checked its xxh3) but not signed by this cluster's workers: forged,
    // or written under another key (a worker without the shared --kv-mac-key-file).
    if (metrics_.mac_failures != nullptr) metrics_.mac_failures->Increment();
    if (uint64_t held_back = 0; mac_failure_log_.Allow(&held_back)) {
      LogWarning(StrCat("error=kv_mac_mismatch tier=kvstore kvstore=", shards_[s]->address, " key=", key.Hex(),
                        " held_back=", held_back, " effect=recompute,delete"));
    }
    return false;
  }
  return true;
}

std::vector<std::shared_ptr<const BlockPayload>> KvStoreTier::FetchPrefix(absl::Span<const BlockKey> keys) {
  const uint64_t stored_bytes = options_.block_bytes + kBlockMacBytes;
  // Block i lands in payloads[i], a slot of the registered region: as many blocks as there are free slots.
  std::vector<std::shared_ptr<BlockPayload>> payloads;
  for (size_t i = 0; i < keys.size(); ++i) {
    std::shared_ptr<BlockPayload> payload = payloads_->Allocate();
    if (payload == nullptr) break;
    payloads.push_back(std::move(payload));
  }
  const size_t max_blocks = payloads.size();
  // One batched get per daemon, in parallel.
  std::vector<std::vector<kvstore::GetBlock>> per_shard(shards_.size());
  std::vector<std::vector<size_t>> positions(shards_.size());
  for (size_t i = 0; i < max_blocks; ++i) {
    const size_t s = ShardOf(keys[i]);
    per_shard[s].push_back({keys[i], payloads[i]->data(), stored_bytes});
    positions[s].push_back(i);
  }
  std::vector<bool> present(max_blocks, false);
  std::vector<std::future<absl::StatusOr<std::vector<kvstore::GetOutcome>>>> futures(shards_.size());
  std::vector<kvstore::KvStoreClient*> clients(shards_.size(), nullptr);
  for (size_t s = 0; s < shards_.size(); ++s) {
    if (per_shard[s].empty()) continue;
    clients[s] = Client(*shards_[s]);
    if (clients[s] == nullptr) {
      if (metrics_.fetch_failures != nullptr) metrics_.fetch_failures->Increment();
      continue;
    }
    futures[s] = clients[s]->GetAsync(per_shard[s]);
  }
  for (size_t s = 0; s < shards_.size(); ++s) {
    if (clients[s] == nullptr) continue;
    absl::StatusOr<std::vector<kvstore::GetOutcome>> outcomes = futures[s].get();
    if (!outcomes.ok()) {
      if (metrics_.fetch_failures != nullptr) metrics_.fetch_failures->Increment();
      MarkFailure(*shards_[s], outcomes.status(), "get");
      continue;
    }
    MarkHealthy(*shards_[s]);
    std::vector<BlockKey> bad;
    for (size_t j = 0; j < outcomes->size(); ++j) {
      const kvstore::GetOutcome& outcome = (*outcomes)[j];
      if (!outcome.found) continue;
      if (!CheckFetched(s, per_shard[s][j].key, outcome.size_bytes, *payloads[positions[s][j]])) {
        // Never used; deleted so that the block computed now can take its place (first writer wins).
        bad.push_back(per_shard[s][j].key);
        continue;
      }
      present[positions[s][j]] = true;
    }
    if (!bad.empty()) (void)clients[s]->Delete(bad);  // best effort: a miss costs time, not correctness
  }
  std::vector<std::shared_ptr<const BlockPayload>> out;
  for (size_t i = 0; i < max_blocks && present[i]; ++i) out.push_back(std::move(payloads[i]));
  if (metrics_.fetched_blocks != nullptr) metrics_.fetched_blocks->Increment(static_cast<double>(out.size()));
  return out;
}

void KvStoreTier::FetchPrefixAsync(std::vector<BlockKey> keys, FetchDone done) {
  absl::MutexLock lock(&fetch_mutex_);
  fetches_.push_back({std::move(keys), std::move(done)});
}

void KvStoreTier::FetchLoop() {
  while (true) {
    FetchJob job;
    bool stopping = false;
    {
      absl::MutexLock lock(&fetch_mutex_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(fetch_mutex_) { return stop_fetching_ || !fetches_.empty(); };
      fetch_mutex_.Await(absl::Condition(&ready));
      if (fetches_.empty()) return;
      job = std::move(fetches_.front());
      fetches_.pop_front();
      stopping = stop_fetching_;
    }
    if (stopping) {  // jobs still queued at the end are answered with nothing: their callers wait for them
      job.done({});
      continue;
    }
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::shared_ptr<const BlockPayload>> payloads = FetchPrefix(job.keys);
    if (metrics_.fetch_seconds != nullptr) {
      metrics_.fetch_seconds->Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    job.done(std::move(payloads));
  }
}

void KvStoreTier::Write(std::vector<WriteItem> blocks) {
  absl::MutexLock lock(&queue_mutex_);
  for (WriteItem& item : blocks) {
    if (queue_.size() >= options_.max_write_queue_blocks) {
      CountWriteFailure(1, "queue_full", "-",
                        StrCat(queue_.size(), " blocks wait to be written (the kvstore is slower than the engine)"));
      continue;
    }
    if (item.payload == nullptr || item.payload->size() != options_.block_bytes) {
      CountWriteFailure(1, "bad_payload", "-",
                        StrCat("a payload of ", item.payload == nullptr ? 0 : item.payload->size(),
                               " bytes for blocks of ", options_.block_bytes));
      continue;
    }
    queue_.push_back(std::move(item));
  }
}

bool KvStoreTier::WaitForWrites(std::chrono::milliseconds timeout) {
  absl::MutexLock lock(&queue_mutex_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mutex_) { return queue_.empty() && !writing_; };
  return queue_mutex_.AwaitWithTimeout(absl::Condition(&idle), absl::FromChrono(timeout));
}

void KvStoreTier::WriterLoop() {
  const uint64_t stored_bytes = options_.block_bytes + kBlockMacBytes;  // payload ‖ MAC trailer
  const size_t max_blocks = std::max<uint64_t>(1, kWriteBatchBytes / stored_bytes);
  // While idle, the writer connects to daemons that were down (backing off while they stay down), so the
  // first fetch after a daemon comes up does not pay for the connection and the arena's registration.
  auto idle_wait = options_.reconnect_interval;
  while (true) {
    std::vector<WriteItem> batch;
    bool idle = false;
    {
      absl::MutexLock lock(&queue_mutex_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mutex_) { return stop_ || !queue_.empty(); };
      idle = !queue_mutex_.AwaitWithTimeout(absl::Condition(&ready), absl::FromChrono(idle_wait));
      if (stop_) return;
      while (!idle && !queue_.empty() && batch.size() < max_blocks) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      writing_ = !idle;
    }
    if (idle) {
      bool all_connected = true;
      for (auto& shard : shards_) all_connected &= Client(*shard) != nullptr;
      idle_wait = all_connected ? options_.reconnect_interval
                                : std::min<std::chrono::milliseconds>(2 * idle_wait, std::chrono::seconds(5));
      continue;
    }
    // Requests that share a prefix export the same blocks; the daemon refuses a put that names a key twice
    // (all of it), so each key goes once: the first copy, as the host cache keeps it.
    absl::flat_hash_set<BlockKey> seen;
    std::erase_if(batch, [&seen](const WriteItem& item) { return !seen.insert(item.key).second; });
    // A payload is put from where it is; one outside the region (a caller's own, on the heap) is copied
    // into a slot first, or lost when there is none.
    std::vector<std::shared_ptr<BlockPayload>> copies;
    std::vector<std::vector<kvstore::PutBlock>> per_shard(shards_.size());
    for (const WriteItem& item : batch) {
      const std::byte* data = item.payload->data();
      if (!payloads_->InRegion(*item.payload)) {
        std::shared_ptr<BlockPayload> slot = payloads_->Allocate();
        if (slot == nullptr) {
          CountWriteFailure(1, "no_payload_slot", "-",
                            "every payload slot is in use (raise the host cache or staging)");
          continue;
        }
        std::memcpy(slot->data(), data, stored_bytes);
        data = slot->data();
        copies.push_back(std::move(slot));
      }
      per_shard[ShardOf(item.key)].push_back({item.key, data, stored_bytes, item.parent});
    }
    for (size_t s = 0; s < shards_.size(); ++s) {
      if (per_shard[s].empty()) continue;
      const double blocks = static_cast<double>(per_shard[s].size());
      kvstore::KvStoreClient* client = Client(*shards_[s]);
      // Writes are off every request's path: a daemon that is not reachable yet (a cluster starting) is
      // given a few reconnect intervals before the blocks are dropped.
      for (int attempt = 0; client == nullptr && attempt < kWriteConnectAttempts; ++attempt) {
        {
          absl::MutexLock lock(&queue_mutex_);
          if (queue_mutex_.AwaitWithTimeout(absl::Condition(&stop_), absl::FromChrono(options_.reconnect_interval))) {
            break;  // stopping
          }
        }
        client = Client(*shards_[s]);
      }
      if (client == nullptr) {
        std::string why;
        {
          absl::MutexLock lock(&shards_[s]->mutex);
          why = shards_[s]->connect_error;
        }
        CountWriteFailure(blocks, "kvstore_unreachable", shards_[s]->address, why);
        continue;
      }
      absl::StatusOr<std::vector<kvstore::PutOutcome>> outcomes = client->Put(per_shard[s]);
      if (!outcomes.ok()) {
        CountWriteFailure(blocks, IsUnreachable(outcomes.status()) ? "put_failed" : "put_rejected", shards_[s]->address,
                          std::string(outcomes.status().message()));
        if (IsUnreachable(outcomes.status())) {
          MarkFailure(*shards_[s], outcomes.status(), "put");
        } else {
          MarkPutRejected(*shards_[s], outcomes.status(), per_shard[s].size());
        }
        continue;
      }
      MarkHealthy(*shards_[s]);
      MarkPutAccepted(*shards_[s]);
      if (metrics_.written_blocks != nullptr) metrics_.written_blocks->Increment(blocks);
    }
    // The payloads go back to the pool before WaitForWrites can see the writer idle.
    per_shard.clear();
    copies.clear();
    batch.clear();
    absl::MutexLock lock(&queue_mutex_);
    writing_ = false;
  }
}

}  // namespace strata::worker
