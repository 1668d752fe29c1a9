// HolderAgent: what a block holder (a worker, a kvstore) runs to stay known to the scheduler
// (proto/scheduler.proto): Register, a heartbeat that keeps the lease and carries the load, one
// KvEvents stream that opens with the holder's inventory and then carries numbered STORED / EVICTED
// events, an inventory again whenever the scheduler asks (resync), and a fresh registration on NotFound
// (scheduler restart, lapsed lease).
//
//   HolderAgent agent(options, {.inventory = [&] { return cache.Inventory(); }, .load = ...});
//   agent.Start();
//   agent.Stored(proto::TIER_HOST, keys);   // from the holder, as its cache changes
//   agent.Evicted(keys);
//
// The scheduler is a hint, never a dependency: while it is unreachable the holder keeps serving, the
// agent retries with capped exponential backoff and logs once per state change (not per retry). Events
// produced while no stream is open are dropped: the inventory sent on the next stream replaces them.
//
// Consistency of inventory and events: when an inventory is due, the agent first drops the events queued
// so far, then asks the holder for its inventory, then sends it and every event queued since. An event
// that raced with the inventory may be sent although the inventory already reflects it; STORED and
// EVICTED are idempotent per key (the last one for a key wins), so the scheduler ends at the truth.
// This lets the holder call Stored()/Evicted() under its own lock: the agent never calls the holder's
// callbacks while holding its own lock.
//
// Knows nothing of models, engines or KV bytes. Thread-safe.
#ifndef STRATA_SCHEDULER_CLIENT_HOLDER_AGENT_H_
#define STRATA_SCHEDULER_CLIENT_HOLDER_AGENT_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/block_key.h"
#include "common/grpc_security.h"
#include "common/metrics.h"
#include "proto/scheduler.grpc.pb.h"

namespace strata::scheduler {

struct HolderAgentOptions {
  std::string scheduler_address;  // host:port of strata-scheduler
  // The channel's certificate and token (common/grpc_security.h); default: plaintext, no token.
  std::shared_ptr<const RpcSecurity> security = RpcSecurity::Insecure();
  // What Register sends: holder_id, kind, key_scheme, address and the kind's info. Required. An
  // incarnation of 0 is replaced by a random one (per agent): a restarted holder's Register then replaces
  // its dead registration at once instead of waiting out the lease.
  proto::RegisterRequest registration;
  std::chrono::milliseconds rpc_timeout{3000};  // every unary call
  // A KvEvents stream is reopened (with an inventory) after this long, so that even the stream carries a
  // deadline; a hung scheduler is noticed by then at the latest (heartbeats notice it sooner).
  std::chrono::milliseconds stream_lifetime{std::chrono::minutes(30)};
  std::chrono::milliseconds min_backoff{200};
  std::chrono::milliseconds max_backoff{5000};
  // Keys per inventory chunk: 131072 keys are 2 MiB, well under gRPC's default 4 MiB message limit.
  size_t inventory_chunk_keys = 131072;
  // Queued keys past this are dropped and the agent resyncs (sends an inventory) instead.
  size_t max_pending_keys = 1 << 20;
  // When set, the agent adds its metrics here (strata_holder_agent_*). Must outlive the agent.
  MetricsRegistry* metrics = nullptr;
};

// One tier's blocks, as the holder holds them now.
using TierInventory = std::vector<std::pair<proto::Tier, std::vector<BlockKey>>>;

struct HolderAgentCallbacks {
  // Everything the holder holds. Called from the agent's thread, without the agent's lock. Required.
  std::function<TierInventory()> inventory;
  // The load for each heartbeat (workers); unset: heartbeats carry none. Agent thread, no agent lock.
  std::function<proto::LoadReport()> load;
};

class HolderAgent {
 public:
  HolderAgent(HolderAgentOptions options, HolderAgentCallbacks callbacks);
  ~HolderAgent();  // Stop()
  HolderAgent(const HolderAgent&) = delete;
  HolderAgent& operator=(const HolderAgent&) = delete;

  // Starts the agent's thread (registration happens there; Start never blocks on the scheduler).
  void Start();
  // Deregisters (best effort, one rpc_timeout) and joins the thread. Idempotent.
  void Stop();

  // The blocks are now (also) in `tier` of this holder / left it entirely. Cheap: queues and returns.
  void Stored(proto::Tier tier, absl::Span<const BlockKey> keys);
  void Evicted(absl::Span<const BlockKey> keys);

  // True while registered with a KvEvents stream open (for health pages and tests).
  bool connected() const;
  // The epoch of the current registration (0 when none).
  uint64_t epoch() const;

 private:
  struct PendingEvent {
    proto::KvEvent::Type type;
    proto::Tier tier;
    std::vector<BlockKey> keys;
  };
  class Session;  // one registration's stream and heartbeats

  void Run();
  // Sleeps up to `duration` or until Stop(); false when stopping.
  bool WaitOrStop(std::chrono::milliseconds duration);
  void Push(PendingEvent event);
  void SetState(bool connected, std::string_view state, std::string_view detail);

  const HolderAgentOptions options_;
  const HolderAgentCallbacks callbacks_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<proto::Scheduler::Stub> stub_;
  std::thread thread_;

  mutable absl::Mutex mutex_;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  bool started_ ABSL_GUARDED_BY(mutex_) = false;
  bool accepting_events_ ABSL_GUARDED_BY(mutex_) = false;  // a stream is open (or opening)
  bool resync_needed_ ABSL_GUARDED_BY(mutex_) = false;     // pending events overflowed
  std::deque<PendingEvent> pending_ ABSL_GUARDED_BY(mutex_);
  size_t pending_keys_ ABSL_GUARDED_BY(mutex_) = 0;
  bool connected_ ABSL_GUARDED_BY(mutex_) = false;
  uint64_t epoch_ ABSL_GUARDED_BY(mutex_) = 0;
  grpc::ClientContext* stream_context_ ABSL_GUARDED_BY(mutex_) = nullptr;  // to cancel on Stop()
  std::string last_state_ ABSL_GUARDED_BY(mutex_);

  Gauge* connected_gauge_ = nullptr;
  Counter* registrations_ = nullptr;
  Counter* inventories_ = nullptr;
  Counter* events_sent_ = nullptr;
  Counter* events_dropped_ = nullptr;
};

}  // namespace strata::scheduler

#endif  // STRATA_SCHEDULER_CLIENT_HOLDER_AGENT_H_
