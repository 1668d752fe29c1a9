// HolderAgent: what a block holder (a worker, a kvstore) runs to stay known to the scheduler replicas
// (proto/scheduler.proto). With each replica, on its own (replica_link.h): Register, a heartbeat that
// keeps the lease and carries the load, one KvEvents stream that opens with the holder's inventory and then
// carries numbered STORED / EVICTED events, an inventory again whenever the replica asks (resync), and a
// fresh registration on NotFound (replica restart, lapsed lease). Every replica thus holds the whole
// registry and block index as soft state, and a front door may route through any of them; a replica that
// dies, hangs or is cut off costs only its own session (README, "Replicas").
//
//   HolderAgent agent(options, {.inventory = [&] { return cache.Inventory(); }, .load = ...});
//   agent.Start();
//   agent.Stored(proto::TIER_HOST, keys);   // from the holder, as its cache changes
//   agent.Evicted(keys);
//
// The scheduler is a hint, never a dependency: while a replica is unreachable the holder keeps serving,
// that replica's session retries with capped exponential backoff and logs once per state change (not per
// retry). Events produced while a replica's stream is closed are dropped for that replica: the inventory
// sent on its next stream replaces them. An event that races with an inventory may be sent although the
// inventory reflects it; STORED and EVICTED are idempotent per key, so every replica ends at the truth.
// The holder may call Stored()/Evicted() under its own lock: the agent never calls the holder's callbacks
// while holding a lock of its own. The callbacks are called from each replica's thread, concurrently.
//
// Knows nothing of models, engines or KV bytes. Thread-safe.
#ifndef STRATA_SCHEDULER_CLIENT_HOLDER_AGENT_H_
#define STRATA_SCHEDULER_CLIENT_HOLDER_AGENT_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/block_key.h"
#include "common/grpc_security.h"
#include "common/metrics.h"
#include "proto/scheduler.grpc.pb.h"

namespace strata::scheduler {

struct HolderAgentOptions {
  // host:port of each strata-scheduler replica (at least one; duplicates are refused by the constructor).
  std::vector<std::string> scheduler_addresses;
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
  // Everything the holder holds. Called from each replica's thread (concurrently), without the agent's
  // locks. Required.
  std::function<TierInventory()> inventory;
  // The load for each heartbeat (workers); unset: heartbeats carry none. Same threads as `inventory`.
  std::function<proto::LoadReport()> load;
};

// OK when `addresses` (the --scheduler flags) has no empty or repeated address; otherwise an
// INVALID_ARGUMENT naming it (a repeated replica would register the holder twice with one replica).
absl::Status CheckSchedulerAddresses(const std::vector<std::string>& addresses);

class ReplicaLink;

class HolderAgent {
 public:
  // REQUIRES: options.scheduler_addresses is not empty and has no duplicate; callbacks.inventory is set.
  HolderAgent(HolderAgentOptions options, HolderAgentCallbacks callbacks);
  ~HolderAgent();  // Stop()
  HolderAgent(const HolderAgent&) = delete;
  HolderAgent& operator=(const HolderAgent&) = delete;

  // Starts one thread per replica (registration happens there; Start never blocks on a scheduler).
  void Start();
  // Deregisters from each replica (best effort, one rpc_timeout, in parallel) and joins the threads.
  // Idempotent.
  void Stop();

  // The blocks are now (also) in `tier` of this holder / left it entirely. Cheap: queues and returns.
  void Stored(proto::Tier tier, absl::Span<const BlockKey> keys);
  void Evicted(absl::Span<const BlockKey> keys);

  // Replicas this holder is registered with, a KvEvents stream open (for health pages and tests).
  int connected_replicas() const;
  // True while registered with at least one replica.
  bool connected() const { return connected_replicas() > 0; }
  // The epoch of the current registration with replica `replica` (0 when none).
  uint64_t epoch(size_t replica = 0) const;

 private:
  const HolderAgentOptions options_;
  const HolderAgentCallbacks callbacks_;
  std::vector<std::unique_ptr<ReplicaLink>> links_;  // one per replica, in the order of the addresses
};

}  // namespace strata::scheduler

#endif  // STRATA_SCHEDULER_CLIENT_HOLDER_AGENT_H_
