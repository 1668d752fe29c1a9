// ReplicaLink: a holder's session with ONE scheduler replica (private to strata_holder_agent; HolderAgent
// runs one per replica). Register, a heartbeat that keeps the lease and carries the load, one KvEvents
// stream that opens with the holder's inventory and then carries numbered STORED / EVICTED events, an
// inventory again whenever the replica asks (resync), and a fresh registration on NotFound (a restarted
// replica, a lapsed lease). Its own thread, queue, sequence numbers and backoff: a replica that is slow,
// partitioned or dead never holds up the others.
//
// Consistency of inventory and events: when an inventory is due, the link first drops the events queued
// so far, then asks the holder for its inventory, then sends it and every event queued since. An event
// that raced with the inventory may be sent although the inventory already reflects it; STORED and
// EVICTED are idempotent per key (the last one for a key wins), so the replica ends at the truth. The link
// never calls the holder's callbacks while holding its own lock.
//
// Thread-safe.
#ifndef STRATA_SCHEDULER_CLIENT_REPLICA_LINK_H_
#define STRATA_SCHEDULER_CLIENT_REPLICA_LINK_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/block_key.h"
#include "common/metrics.h"
#include "proto/scheduler.grpc.pb.h"
#include "scheduler/client/holder_agent.h"

namespace strata::scheduler {

// The agent's metrics, shared by its links (null pointers: none).
struct HolderAgentMetrics {
  Gauge* connected = nullptr;  // replicas registered with a stream open
  Counter* registrations = nullptr;
  Counter* inventories = nullptr;
  Counter* events_sent = nullptr;
  Counter* events_dropped = nullptr;
};

class ReplicaLink {
 public:
  // `options.registration` carries the agent's incarnation already; `address` is this replica's.
  ReplicaLink(const HolderAgentOptions& options, std::string address, const HolderAgentCallbacks& callbacks,
              HolderAgentMetrics metrics);
  ~ReplicaLink();  // Stop()
  ReplicaLink(const ReplicaLink&) = delete;
  ReplicaLink& operator=(const ReplicaLink&) = delete;

  void Start();
  // Tells the thread to stop (it deregisters, best effort, within one rpc_timeout); returns at once.
  void RequestStop();
  // RequestStop() and joins the thread. Idempotent.
  void Stop();
  // Queues `keys` for this replica (dropped while no stream is open: the next inventory covers them).
  void Push(proto::KvEvent::Type type, proto::Tier tier, absl::Span<const BlockKey> keys);

  bool connected() const;
  uint64_t epoch() const;
  const std::string& address() const { return address_; }

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
  void SetState(bool connected, std::string_view state, std::string_view detail);

  const HolderAgentOptions& options_;  // the agent's, which outlives its links
  const std::string address_;
  const HolderAgentCallbacks& callbacks_;
  const HolderAgentMetrics metrics_;
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
};

}  // namespace strata::scheduler

#endif  // STRATA_SCHEDULER_CLIENT_REPLICA_LINK_H_
