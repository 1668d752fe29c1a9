// KvStoreTier: tiers S and D as the worker sees them — one or more strata-kvstore daemons, each block
// on the daemon that rendezvous hashing over their addresses picks for its key (common/rendezvous.h): the
// same daemon in every worker whatever the order of their `--kvstore` flags, and adding a daemon moves
// only ~1/N of the blocks. Fetches the longest present prefix of a chain (on its fetch threads,
// several at once), and writes new blocks back on its own thread, off the path of any token.
//
// Memory: the payload pool's region (block_payload.h) is registered with each daemon's client once per
// connection (never per request). A fetch lands in free slots of the pool, which become the payloads it
// returns; a put reads the payloads where they are. No staging copy either way (a payload outside the
// region, on the heap, is copied into a slot to be written, or dropped when there is none).
//
// Never serves wrong KV: the client checks every block's xxh3 (corruption), this tier every block's MAC
// (block_mac.h: forgery, another cluster's or process's key) and size; a block that fails is a miss, is
// counted (strata_worker_kv_mac_failures_total for the MAC, at most one log line a second) and deleted
// from its daemon so that the block computed instead can take its place. A daemon that is down (at start or later) is a
// miss: the caller recomputes; each failure is counted and logged once per change of state. A put the
// daemon refuses (a bad request, not a dead daemon) loses its blocks without marking the daemon down.
// Every block not written is counted and logged with its cause, at most one line a second.
// Thread-safe.
#ifndef STRATA_WORKER_PREFIX_KVSTORE_TIER_H_
#define STRATA_WORKER_PREFIX_KVSTORE_TIER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/block_key.h"
#include "common/grpc_security.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/rendezvous.h"
#include "kvstore/client/client.h"
#include "worker/prefix/block_mac.h"
#include "worker/prefix/block_payload.h"

namespace strata::worker {

struct KvStoreTierOptions {
  // host:port of each daemon's gRPC endpoint; at least one. Each is also the daemon's id for hashing, so
  // every worker (and the scheduler, through the daemon's --advertise-address) must spell it the same.
  std::vector<std::string> addresses;
  uint64_t block_bytes = 0;            // every block's payload size (the daemons hold it and its MAC trailer)
  // The workers' MAC key: puts carry the payloads' trailers (sealed by the caller), fetches are verified.
  std::shared_ptr<const BlockMac> mac;  // required
  // The payloads' memory, slots of block_bytes (shared with tier H and the engine's exports). Null or
  // without a region: the tier makes its own of staging_bytes (at least one block).
  std::shared_ptr<PayloadPool> payloads;
  uint64_t staging_bytes = 64ull << 20;
  int fetch_threads = 4;  // fetches in flight at once
  std::chrono::milliseconds rpc_timeout{2000};
  std::chrono::milliseconds transfer_timeout{10000};
  // A daemon that refused to connect is tried again on use after this, and by the idle writer thread
  // (backing off to 5 s while it stays down): a cluster brings its kvstores up beside its workers.
  std::chrono::milliseconds reconnect_interval{250};
  kvstore::PeerFailure peer_failure = kvstore::PeerFailure::kDetect;
  // The channels' certificate and token (common/grpc_security.h); default: plaintext, no token.
  std::shared_ptr<const RpcSecurity> security = RpcSecurity::Insecure();
  // Blocks waiting to be written; past this new ones are dropped (counted): the kvstore is a cache.
  size_t max_write_queue_blocks = 4096;
};

struct KvStoreTierMetrics {
  Counter* fetch_failures = nullptr;  // a daemon's get failed, or a block had the wrong size
  Counter* mac_failures = nullptr;    // a block whose MAC did not verify (forged, or another key's)
  Counter* fetched_blocks = nullptr;
  Counter* written_blocks = nullptr;
  Counter* write_failures = nullptr;   // blocks not written (daemon down or refusing the put, queue full)
  Histogram* fetch_seconds = nullptr;  // one prefix fetch, all daemons
};

class KvStoreTier {
 public:
  static absl::StatusOr<std::unique_ptr<KvStoreTier>> Create(const KvStoreTierOptions& options,
                                                             KvStoreTierMetrics metrics);
  ~KvStoreTier();  // finishes the writes already taken, drops the queue

  // Payloads of the longest run of `keys` (from the first) that the daemons hold and that passed every
  // check (MAC included), at most as many as the pool had free slots, in those slots.
  using FetchDone = std::function<void(std::vector<std::shared_ptr<const BlockPayload>>)>;
  // Runs the fetch on one of the tier's fetch threads and calls `done` there with the result; returns at
  // once. Every accepted fetch calls `done`, also on failure (with what it got, possibly nothing).
  void FetchPrefixAsync(std::vector<BlockKey> keys, FetchDone done);

  struct WriteItem {
    BlockKey key;
    std::optional<BlockKey> parent;
    std::shared_ptr<const BlockPayload> payload;
  };
  // Queues the blocks for the writer thread and returns at once. Each payload's trailer must hold its
  // MAC (BlockMac::Seal) already: the tier writes it as it is.
  void Write(std::vector<WriteItem> blocks);
  // Waits until every queued write has been attempted (tests, drain); false on timeout.
  bool WaitForWrites(std::chrono::milliseconds timeout);

  uint64_t block_bytes() const { return options_.block_bytes; }

 private:
  struct Shard {
    std::string address;
    absl::Mutex mutex;
    std::unique_ptr<kvstore::KvStoreClient> client ABSL_GUARDED_BY(mutex);
    std::chrono::steady_clock::time_point retry_at ABSL_GUARDED_BY(mutex){};
    bool healthy ABSL_GUARDED_BY(mutex) = true;          // for logging state changes only
    bool rejecting_puts ABSL_GUARDED_BY(mutex) = false;  // likewise: its last put was refused
    std::string connect_error ABSL_GUARDED_BY(mutex);    // why the last connection attempt failed
  };
  explicit KvStoreTier(const KvStoreTierOptions& options, KvStoreTierMetrics metrics);
  // The shard's client, connecting (and registering the arena) when there is none and the retry time
  // has come; nullptr when the daemon is unreachable.
  kvstore::KvStoreClient* Client(Shard& shard);
  void MarkFailure(Shard& shard, const absl::Status& status, std::string_view op);
  void MarkHealthy(Shard& shard);
  // The daemon refused a put (InvalidArgument, ResourceExhausted, ...): its blocks are lost, but the daemon
  // is reachable. Logged once until a put succeeds again.
  void MarkPutRejected(Shard& shard, const absl::Status& status, size_t blocks);
  void MarkPutAccepted(Shard& shard);
  // Blocks that will not be written: counted, and logged at most once a second with the cause (queue_full,
  // bad_payload, no_payload_slot, kvstore_unreachable, put_failed, put_rejected) and the daemon's message.
  void CountWriteFailure(double blocks, std::string_view cause, std::string_view kvstore, std::string_view message);
  size_t ShardOf(const BlockKey& key) const { return placement_.Pick(key); }
  void WriterLoop();
  void FetchLoop();
  // Whether shard `s`'s block `key`, found with `stored_bytes`, is usable: the right size and its MAC
  // verifies. Counts and logs (throttled) what is not.
  bool CheckFetched(size_t s, const BlockKey& key, uint64_t stored_bytes, const BlockPayload& payload);
  // The fetch itself, on a fetch thread.
  std::vector<std::shared_ptr<const BlockPayload>> FetchPrefix(absl::Span<const BlockKey> keys);

  const KvStoreTierOptions options_;
  const KvStoreTierMetrics metrics_;
  LogThrottle write_failure_log_;
  const RendezvousHash placement_;  // over options_.addresses: shards_[i] is addresses[i]
  std::vector<std::unique_ptr<Shard>> shards_;
  std::shared_ptr<PayloadPool> payloads_;  // registered with every client
  LogThrottle mac_failure_log_;

  absl::Mutex queue_mutex_;
  std::deque<WriteItem> queue_ ABSL_GUARDED_BY(queue_mutex_);
  bool writing_ ABSL_GUARDED_BY(queue_mutex_) = false;
  bool stop_ ABSL_GUARDED_BY(queue_mutex_) = false;
  std::thread writer_;

  struct FetchJob {
    std::vector<BlockKey> keys;
    FetchDone done;
  };
  absl::Mutex fetch_mutex_;
  std::deque<FetchJob> fetches_ ABSL_GUARDED_BY(fetch_mutex_);
  bool stop_fetching_ ABSL_GUARDED_BY(fetch_mutex_) = false;
  std::vector<std::thread> fetchers_;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_PREFIX_KVSTORE_TIER_H_
