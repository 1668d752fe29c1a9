#include "scheduler/client/replica_link.h"

#include <algorithm>

#include "absl/time/time.h"
#include "common/log.h"
#include "common/rpc.h"
#include "common/status.h"
#include "common/strings.h"

namespace strata::scheduler {
namespace {

std::string PackKeys(absl::Span<const BlockKey> keys) {
  std::string packed;
  packed.reserve(keys.size() * sizeof(BlockKey::bytes));
  for (const BlockKey& key : keys) packed.append(reinterpret_cast<const char*>(key.bytes.data()), key.bytes.size());
  return packed;
}

absl::Time ToAbsl(std::chrono::steady_clock::time_point when) {
  return absl::Now() + absl::FromChrono(when - std::chrono::steady_clock::now());
}

std::string CodeName(const grpc::Status& status) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
}

}  // namespace

// How a stream ended, and what the agent does next.
enum class StreamEnd {
  kStopping,    // Stop() was called
  kReregister,  // the scheduler does not know this registration: Register again at once
  kFailed,      // the scheduler is unreachable or broke the stream: back off, then reopen
  kLifetime,    // the stream reached its lifetime: reopen at once
};

// One KvEvents stream of one registration: the inventory, then events and heartbeats until it ends.
class ReplicaLink::Session {
 public:
  Session(ReplicaLink& agent, uint64_t epoch, std::chrono::milliseconds heartbeat_interval, uint64_t& sequence)
      : agent_(agent), epoch_(epoch), heartbeat_interval_(heartbeat_interval), sequence_(sequence) {}

  StreamEnd Run() {
    grpc::ClientContext context;
    const auto stream_deadline = std::chrono::steady_clock::now() + agent_.options_.stream_lifetime;
    SetDeadline(context, agent_.options_.stream_lifetime);
    {
      absl::MutexLock lock(&agent_.mutex_);
      if (agent_.stopping_) return StreamEnd::kStopping;
      agent_.stream_context_ = &context;
    }
    stream_ = agent_.stub_->KvEvents(&context);
    StreamEnd end = Loop(stream_deadline);
    {
      absl::MutexLock lock(&agent_.mutex_);
      agent_.stream_context_ = nullptr;
      agent_.accepting_events_ = false;
      agent_.pending_.clear();
      agent_.pending_keys_ = 0;
    }
    // A stream whose Read failed has ended and Finish gives the scheduler's status (NotFound: register
    // again). One still open is cancelled so that Finish cannot block on a scheduler that hangs.
    if (!stream_ended_) context.TryCancel();
    const grpc::Status finish = stream_->Finish();
    if (end == StreamEnd::kFailed && finish.error_code() == grpc::StatusCode::NOT_FOUND) end = StreamEnd::kReregister;
    return end;
  }

  std::string failure() const { return failure_; }
  bool connected_once() const { return connected_once_; }

 private:
  StreamEnd Loop(std::chrono::steady_clock::time_point stream_deadline) {
    bool send_inventory = true;
    auto next_heartbeat = std::chrono::steady_clock::now();
    while (true) {
      if (send_inventory) {
        if (!SendInventory()) return StreamEnd::kFailed;
        send_inventory = false;
        connected_once_ = true;
        agent_.SetState(true, "connected", "");
      }
      std::vector<PendingEvent> events;
      bool overflowed = false;
      {
        absl::MutexLock lock(&agent_.mutex_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(agent_.mutex_) {
          return agent_.stopping_ || !agent_.pending_.empty() || agent_.resync_needed_;
        };
        agent_.mutex_.AwaitWithDeadline(absl::Condition(&ready), ToAbsl(next_heartbeat));
        if (agent_.stopping_) return StreamEnd::kStopping;
        overflowed = agent_.resync_needed_;
        for (PendingEvent& event : agent_.pending_) events.push_back(std::move(event));
        agent_.pending_.clear();
        agent_.pending_keys_ = 0;
      }
      if (overflowed) {
        send_inventory = true;
        continue;
      }
      if (!events.empty()) {
        proto::KvEventMessage message = Header();
        for (PendingEvent& event : events) {
          proto::KvEvent* out = message.add_events();
          out->set_sequence(++sequence_);
          out->set_type(event.type);
          if (event.type == proto::KvEvent::TYPE_STORED) out->set_tier(event.tier);
          out->set_keys(PackKeys(event.keys));
        }
        proto::KvEventReply reply;
        if (!Exchange(message, reply)) return StreamEnd::kFailed;
        if (agent_.metrics_.events_sent != nullptr) agent_.metrics_.events_sent->Increment(static_cast<double>(events.size()));
        if (reply.resync_required()) send_inventory = true;
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_heartbeat) {
        proto::HeartbeatRequest request;
        request.set_holder_id(agent_.options_.registration.holder_id());
        request.set_epoch(epoch_);
        request.set_last_event_sequence(sequence_);
        if (agent_.callbacks_.load) *request.mutable_load() = agent_.callbacks_.load();
        proto::HeartbeatResponse response;
        grpc::ClientContext context;
        SetDeadline(context, agent_.options_.rpc_timeout);
        const grpc::Status status = agent_.stub_->Heartbeat(&context, request, &response);
        if (status.error_code() == grpc::StatusCode::NOT_FOUND ||
            status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
          failure_ = StrCat("heartbeat code=", CodeName(status), " message=\"", status.error_message(), "\"");
          return StreamEnd::kReregister;
        }
        if (!status.ok()) {
          failure_ = StrCat("heartbeat code=", CodeName(status));
          return StreamEnd::kFailed;
        }
        if (response.resync_required()) send_inventory = true;
        next_heartbeat = now + heartbeat_interval_;
      }
      if (now >= stream_deadline - 2 * agent_.options_.rpc_timeout) return StreamEnd::kLifetime;
    }
  }

  proto::KvEventMessage Header() const {
    proto::KvEventMessage message;
    message.set_holder_id(agent_.options_.registration.holder_id());
    message.set_epoch(epoch_);
    return message;
  }

  // Drops what is queued (the inventory reflects it), asks the holder for its inventory and sends it in
  // chunks, numbered with the current sequence.
  bool SendInventory() {
    {
      absl::MutexLock lock(&agent_.mutex_);
      agent_.pending_.clear();
      agent_.pending_keys_ = 0;
      agent_.resync_needed_ = false;
      agent_.accepting_events_ = true;
    }
    const TierInventory inventory = agent_.callbacks_.inventory();
    // Flatten into (tier, key) runs cut at chunk_keys.
    const size_t chunk_keys = std::max<size_t>(1, agent_.options_.inventory_chunk_keys);
    std::vector<proto::KvEventMessage> chunks(1, Header());
    size_t in_chunk = 0;
    for (const auto& [tier, keys] : inventory) {
      size_t at = 0;
      while (at < keys.size()) {
        if (in_chunk == chunk_keys) {
          chunks.push_back(Header());
          in_chunk = 0;
        }
        const size_t take = std::min(keys.size() - at, chunk_keys - in_chunk);
        proto::TierBlocks* blocks = chunks.back().mutable_inventory()->add_tiers();
        blocks->set_tier(tier);
        blocks->set_keys(PackKeys(absl::MakeConstSpan(keys).subspan(at, take)));
        at += take;
        in_chunk += take;
      }
    }
    for (size_t i = 0; i < chunks.size(); ++i) {
      proto::Inventory* inv = chunks[i].mutable_inventory();
      inv->set_sequence(sequence_);
      inv->set_continues(i > 0);
      inv->set_more_follow(i + 1 < chunks.size());
      proto::KvEventReply reply;
      if (!Exchange(chunks[i], reply)) return false;
    }
    if (agent_.metrics_.inventories != nullptr) agent_.metrics_.inventories->Increment();
    return true;
  }

  bool Exchange(const proto::KvEventMessage& message, proto::KvEventReply& reply) {
    if (!stream_->Write(message) || !stream_->Read(&reply)) {
      failure_ = "kv_events_stream_broken";
      stream_ended_ = true;
      return false;
    }
    return true;
  }

  ReplicaLink& agent_;
  const uint64_t epoch_;
  const std::chrono::milliseconds heartbeat_interval_;
  uint64_t& sequence_;
  std::unique_ptr<grpc::ClientReaderWriter<proto::KvEventMessage, proto::KvEventReply>> stream_;
  std::string failure_;
  bool connected_once_ = false;
  bool stream_ended_ = false;
};

ReplicaLink::ReplicaLink(const HolderAgentOptions& options, std::string address,
                         const HolderAgentCallbacks& callbacks, HolderAgentMetrics metrics)
    : options_(options), address_(std::move(address)), callbacks_(callbacks), metrics_(metrics) {
  grpc::ChannelArguments args;
  // Reconnect quickly after a scheduler restart (gRPC's default backoff grows to 2 minutes).
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(options_.max_backoff.count()));
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, static_cast<int>(options_.min_backoff.count()));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, static_cast<int>(options_.min_backoff.count()));
  channel_ = options_.security->CreateChannel(address_, args);
  stub_ = proto::Scheduler::NewStub(channel_);
}

ReplicaLink::~ReplicaLink() { Stop(); }

void ReplicaLink::Start() {
  absl::MutexLock lock(&mutex_);
  if (started_) return;
  started_ = true;
  thread_ = std::thread([this] { Run(); });
}

void ReplicaLink::RequestStop() {
  absl::MutexLock lock(&mutex_);
  if (stopping_) return;
  stopping_ = true;
  if (stream_context_ != nullptr) stream_context_->TryCancel();
}

void ReplicaLink::Stop() {
  RequestStop();
  if (thread_.joinable()) thread_.join();
}

void ReplicaLink::Push(proto::KvEvent::Type type, proto::Tier tier, absl::Span<const BlockKey> keys) {
  absl::MutexLock lock(&mutex_);
  if (!accepting_events_ || resync_needed_) {
    if (metrics_.events_dropped != nullptr) metrics_.events_dropped->Increment();
    return;
  }
  if (pending_keys_ + keys.size() > options_.max_pending_keys) {
    // The replica cannot keep up: an inventory replaces the queue.
    if (metrics_.events_dropped != nullptr) metrics_.events_dropped->Increment(static_cast<double>(pending_.size() + 1));
    pending_.clear();
    pending_keys_ = 0;
    resync_needed_ = true;
    return;
  }
  pending_keys_ += keys.size();
  pending_.push_back({type, tier, std::vector<BlockKey>(keys.begin(), keys.end())});
}

bool ReplicaLink::connected() const {
  absl::MutexLock lock(&mutex_);
  return connected_;
}

uint64_t ReplicaLink::epoch() const {
  absl::MutexLock lock(&mutex_);
  return epoch_;
}

bool ReplicaLink::WaitOrStop(std::chrono::milliseconds duration) {
  absl::MutexLock lock(&mutex_);
  mutex_.AwaitWithTimeout(absl::Condition(&stopping_), absl::FromChrono(duration));
  return !stopping_;
}

void ReplicaLink::SetState(bool connected, std::string_view state, std::string_view detail) {
  absl::MutexLock lock(&mutex_);
  if (metrics_.connected != nullptr && connected != connected_) metrics_.connected->Add(connected ? 1 : -1);
  connected_ = connected;
  // One line per change of state (not per retry; the detail may differ between retries of one state).
  if (state == last_state_) return;
  last_state_ = state;
  const std::string& id = options_.registration.holder_id();
  if (connected) {
    LogInfo(StrCat("event=scheduler_connected holder=", id, " scheduler=", address_,
                   " epoch=", epoch_));
  } else {
    LogWarning(StrCat("event=scheduler_disconnected holder=", id, " scheduler=", address_, " ",
                      state, " ", detail, " retry=backoff"));
  }
}

void ReplicaLink::Run() {
  std::chrono::milliseconds backoff = options_.min_backoff;
  auto grow = [&] { backoff = std::min(options_.max_backoff, backoff * 2); };
  uint64_t epoch = 0;  // 0: not registered
  std::chrono::milliseconds heartbeat_interval{1000};
  uint64_t sequence = 0;
  while (true) {
    {
      absl::MutexLock lock(&mutex_);
      if (stopping_) break;
    }
    if (epoch == 0) {
      proto::RegisterResponse response;
      grpc::ClientContext context;
      SetDeadline(context, options_.rpc_timeout);
      const grpc::Status status = stub_->Register(&context, options_.registration, &response);
      if (!status.ok()) {
        SetState(false, StrCat("error=register_failed code=", CodeName(status)),
                 StrCat("message=\"", status.error_message().substr(0, 200), "\""));
        if (!WaitOrStop(backoff)) break;
        grow();
        continue;
      }
      epoch = response.epoch();
      sequence = 0;
      // Heartbeat at the interval the scheduler asks, and well within a third of the lease.
      uint64_t interval_ms = response.heartbeat_interval_ms();
      if (response.lease_ms() > 0) interval_ms = std::min<uint64_t>(interval_ms == 0 ? ~0ull : interval_ms,
                                                                    std::max<uint64_t>(1, response.lease_ms() / 3));
      heartbeat_interval = std::chrono::milliseconds(interval_ms == 0 ? 1000 : interval_ms);
      if (metrics_.registrations != nullptr) metrics_.registrations->Increment();
      absl::MutexLock lock(&mutex_);
      epoch_ = epoch;
    }
    Session session(*this, epoch, heartbeat_interval, sequence);
    const StreamEnd end = session.Run();
    if (session.connected_once()) backoff = options_.min_backoff;
    if (end == StreamEnd::kStopping) break;
    if (end == StreamEnd::kLifetime) continue;
    if (end == StreamEnd::kReregister) {
      SetState(false, "error=registration_lost", session.failure());
      epoch = 0;
      absl::MutexLock lock(&mutex_);
      epoch_ = 0;
      continue;
    }
    SetState(false, "error=scheduler_unreachable", session.failure());
    if (!WaitOrStop(backoff)) break;
    grow();
  }
  if (epoch != 0) {
    proto::DeregisterRequest request;
    request.set_holder_id(options_.registration.holder_id());
    request.set_epoch(epoch);
    proto::DeregisterResponse response;
    grpc::ClientContext context;
    SetDeadline(context, options_.rpc_timeout);
    (void)stub_->Deregister(&context, request, &response);  // best effort: the lease lapses otherwise
  }
  absl::MutexLock lock(&mutex_);
  if (metrics_.connected != nullptr && connected_) metrics_.connected->Add(-1);
  connected_ = false;
  epoch_ = 0;
}

}  // namespace strata::scheduler
