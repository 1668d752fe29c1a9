// The scheduler's state behind one lock: registry, block index and placement, with their metrics. The
// gRPC service (scheduler/service.h) and trace replay (scheduler/replay/) both drive this class, so
// replay exercises the code the daemon runs. Thread-safe.
#ifndef STRATA_SCHEDULER_SCHEDULER_H_
#define STRATA_SCHEDULER_SCHEDULER_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/metrics.h"
#include "scheduler/block_index.h"
#include "scheduler/clock.h"
#include "scheduler/options.h"
#include "scheduler/placement.h"
#include "scheduler/registry.h"

namespace strata::scheduler {

struct RegisterResult {
  uint64_t epoch = 0;
  int slot = -1;
};

struct HeartbeatResult {
  bool resync_required = false;
};

struct Inventory {
  uint64_t sequence = 0;
  std::vector<std::pair<Tier, std::vector<BlockKey>>> tiers;
  InventoryChunk chunk;  // default: the whole inventory in one piece
};

struct KvEventIn {
  uint64_t sequence = 0;
  EventType type = EventType::kStored;
  Tier tier = Tier::kGpu;
  std::vector<BlockKey> keys;
};

struct EventsResult {
  uint64_t applied_sequence = 0;
  bool resync_required = false;
};

// Route by token ids: the scheduler computes the keys (scheme v1) with the matching workers' context.
struct TokenRoute {
  Sha256Digest model_fingerprint{};
  std::vector<int32_t> token_ids;
  std::string tenant;      // as the trusted front door derived it; empty: no tenant
  std::string cache_salt;  // narrows sharing within the tenant
  std::optional<Policy> policy;
};

// Route by precomputed keys (the worker's context is taken from the matching workers).
struct KeyRoute {
  Sha256Digest model_fingerprint{};
  std::vector<BlockKey> keys;
  uint64_t prompt_tokens = 0;
  std::optional<Policy> policy;
};

struct RouteResult {
  Decision decision;
  std::string worker_id;
  std::string worker_address;
  uint64_t worker_epoch = 0;  // for MarkUnreachable / MarkReachable
};

struct HolderSnapshot {
  std::string holder_id;
  HolderKind kind = HolderKind::kWorker;
  std::string address;
  uint64_t epoch = 0;
  double lease_remaining_s = 0;
  LoadReport load;
  uint64_t blocks = 0;
  uint64_t applied_sequence = 0;
  bool resync_pending = false;
  double seconds_since_kv_event = -1;
  bool unreachable = false;  // marked so, within its backoff
};

class Scheduler {
 public:
  // `clock` and `metrics` (may be null) must outlive the scheduler.
  Scheduler(const Options& options, const Clock* clock, MetricsRegistry* metrics);

  absl::StatusOr<RegisterResult> Register(Registration registration);
  // `load` is absent for kvstores. `last_event_sequence`: what the holder says it has sent; if the index
  // is still behind what the previous heartbeat said, events were lost and a resync is required.
  absl::StatusOr<HeartbeatResult> Heartbeat(const std::string& holder_id, uint64_t epoch,
                                            const std::optional<LoadReport>& load, uint64_t last_event_sequence);
  absl::Status Deregister(const std::string& holder_id, uint64_t epoch);
  // A front door could not reach the holder (connection refused or reset): it leaves placement at once,
  // for a backoff of 250 ms that doubles with each report while it stays unreachable (at most the
  // lease), and is then tried again. A report within the backoff changes nothing. MarkReachable (it
  // answered) puts it back now and resets the backoff. NotFound / FailedPrecondition as Heartbeat (an
  // unknown id, another incarnation's epoch): nothing changes.
  absl::Status MarkUnreachable(const std::string& holder_id, uint64_t epoch);
  absl::Status MarkReachable(const std::string& holder_id, uint64_t epoch);
  // An optional inventory (applied first), then events in order. NotFound / FailedPrecondition for an
  // unknown holder or stale epoch (nothing applied); InvalidArgument for an impossible tier (the events
  // before it stay applied, the rest is dropped and a resync requested, so the view stays a prefix of the
  // holder's history).
  absl::StatusOr<EventsResult> ApplyEvents(const std::string& holder_id, uint64_t epoch, const Inventory* inventory,
                                           const std::vector<KvEventIn>& events);

  absl::StatusOr<RouteResult> Route(const TokenRoute& request);
  absl::StatusOr<RouteResult> Route(const KeyRoute& request);
  // Estimates of every candidate without choosing (tests, debugging).
  absl::StatusOr<std::vector<Estimate>> EstimateAll(const KeyRoute& request);

  // Removes holders whose lease lapsed (and their index entries); returns their ids. The daemon calls it
  // a few times a second; Route never hands out an expired holder even between calls.
  std::vector<std::string> ExpireLeases();

  std::vector<HolderSnapshot> Holders() const;
  uint64_t IndexBlocks() const;
  uint64_t IndexCapacityBlocks() const { return options_.index_capacity_blocks; }
  uint64_t IndexTableBytes() const;
  // Logs holders whose events have fallen silent while their heartbeats say they sent more. The daemon
  // calls it with ExpireLeases.
  void CheckSilence();

 private:
  absl::StatusOr<RouteResult> RouteLocked(RouteInput input) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::StatusOr<RouteInput> KeyRouteInputLocked(const KeyRoute& request) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void RecordRoute(absl::Time start, const absl::StatusOr<RouteResult>& result);
  // The context of any live worker of this model; NotFound (as Unavailable) when none.
  absl::StatusOr<BlockKeyContext> ModelContextLocked(const Sha256Digest& fingerprint) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void RemoveLocked(int slot, std::string_view why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Removes the per-holder series of holders no longer registered (they would otherwise grow with every
  // rollout). REQUIRES: neither mutex held.
  void DropDepartedSeries() ABSL_LOCKS_EXCLUDED(mutex_, series_mutex_);

  struct Metrics {
    Gauge* workers = nullptr;
    Gauge* kvstores = nullptr;
    Counter* registrations_refused = nullptr;
    Counter* registrations_replaced = nullptr;
    Counter* unreachable_marks = nullptr;
    Counter* lease_expiries = nullptr;
    std::array<Counter*, 3> routes{};  // by Policy
    Counter* route_errors = nullptr;
    Histogram* route_latency = nullptr;
    Histogram* estimated_ttft = nullptr;
    Counter* events_stored = nullptr;
    Counter* events_evicted = nullptr;
    Counter* events_rejected = nullptr;
    Counter* sequence_gaps = nullptr;
    Counter* inventories = nullptr;
    std::array<Counter*, 4> blocks_reused{};  // by Tier
    Counter* blocks_requested = nullptr;
  };

  const Options options_;
  const Clock* clock_;
  MetricsRegistry* metrics_registry_;
  Metrics metrics_;
  mutable absl::Mutex mutex_;
  Registry registry_ ABSL_GUARDED_BY(mutex_);
  BlockIndex index_ ABSL_GUARDED_BY(mutex_);
  Placer placer_ ABSL_GUARDED_BY(mutex_);
  // Per slot: when its last KV event or inventory arrived (InfinitePast: none), and whether the silence
  // warning was logged for it.
  std::array<absl::Time, kMaxHolders> last_event_at_ ABSL_GUARDED_BY(mutex_);
  std::array<bool, kMaxHolders> silence_logged_ ABSL_GUARDED_BY(mutex_){};
  absl::Time index_full_logged_at_ ABSL_GUARDED_BY(mutex_) = absl::InfinitePast();
  // Holder ids that have a per-holder silence gauge already (series are never removed).
  // Its own lock: series are added outside mutex_, because rendering /metrics holds the metrics registry's
  // lock while the series' callback takes mutex_.
  // Taken before mutex_ (DropDepartedSeries), never while mutex_ is held: the registry calls the series'
  // callbacks, which take mutex_, under its own lock.
  absl::Mutex series_mutex_ ABSL_ACQUIRED_BEFORE(mutex_);
  absl::flat_hash_map<std::string, int> silence_series_ ABSL_GUARDED_BY(series_mutex_);
};

}  // namespace strata::scheduler

#endif  // STRATA_SCHEDULER_SCHEDULER_H_
