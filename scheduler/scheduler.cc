#include "scheduler/scheduler.h"

#include <algorithm>

#include "common/log.h"
#include "common/status.h"
#include "common/strings.h"

namespace strata::scheduler {
namespace {

std::string_view KindName(HolderKind kind) { return kind == HolderKind::kWorker ? "worker" : "kvstore"; }

}  // namespace

std::string_view PolicyName(Policy policy) {
  switch (policy) {
    case Policy::kRoundRobin:
      return "round-robin";
    case Policy::kLeastLoaded:
      return "least-loaded";
    case Policy::kCacheAware:
      return "cache-aware";
  }
  return "unknown";
}

std::optional<Policy> PolicyFromName(std::string_view name) {
  for (Policy policy : {Policy::kRoundRobin, Policy::kLeastLoaded, Policy::kCacheAware}) {
    if (PolicyName(policy) == name) return policy;
  }
  return std::nullopt;
}

Scheduler::Scheduler(const Options& options, const Clock* clock, MetricsRegistry* metrics)
    : options_(options),
      clock_(clock),
      metrics_registry_(metrics),
      registry_(options.lease),
      index_(options.index_capacity_blocks),
      placer_(options) {
  last_event_at_.fill(absl::InfinitePast());
  if (metrics == nullptr) return;
  MetricsRegistry& m = *metrics;
  metrics_.workers =
      &m.AddGauge("strata_scheduler_holders", "Registered holders with a live lease.", {{"kind", "worker"}});
  metrics_.kvstores =
      &m.AddGauge("strata_scheduler_holders", "Registered holders with a live lease.", {{"kind", "kvstore"}});
  metrics_.registrations_refused = &m.AddCounter("strata_scheduler_registrations_refused_total",
                                                 "Registrations refused (malformed, scheme "
                                                 "version mismatch, duplicate id).");
  metrics_.lease_expiries =
      &m.AddCounter("strata_scheduler_lease_expiries_total", "Holders removed because their lease lapsed.");
  metrics_.registrations_replaced =
      &m.AddCounter("strata_scheduler_registrations_replaced_total",
                    "Live registrations replaced by a new incarnation of their holder (a restart).");
  metrics_.unreachable_marks =
      &m.AddCounter("strata_scheduler_unreachable_marks_total",
                    "Holders taken out of placement because a front door could not reach them.");
  m.AddGaugeCallback("strata_scheduler_unreachable_holders",
                     "Holders out of placement now because a front door could not reach them.", {}, [this] {
                       absl::MutexLock lock(&mutex_);
                       const absl::Time now = clock_->Now();
                       double out = 0;
                       for (int slot : registry_.AllSlots()) out += registry_.FindBySlot(slot)->unreachable_until > now;
                       return out;
                     });
  for (Policy policy : {Policy::kRoundRobin, Policy::kLeastLoaded, Policy::kCacheAware}) {
    metrics_.routes[static_cast<int>(policy)] =
        &m.AddCounter("strata_scheduler_routes_total", "Routing decisions, by policy.",
                      {{"policy", std::string(PolicyName(policy))}});
  }
  metrics_.route_errors = &m.AddCounter("strata_scheduler_route_errors_total", "Route calls that failed.");
  metrics_.route_latency =
      &m.AddHistogram("strata_scheduler_route_seconds", "Time to decide one route.", LatencyBucketsSeconds());
  metrics_.estimated_ttft =
      &m.AddHistogram("strata_scheduler_estimated_ttft_seconds", "Estimated time to first token of the chosen worker.",
                      LatencyBucketsSeconds());
  metrics_.events_stored =
      &m.AddCounter("strata_scheduler_kv_events_total", "KV events applied.", {{"type", "stored"}});
  metrics_.events_evicted =
      &m.AddCounter("strata_scheduler_kv_events_total", "KV events applied.", {{"type", "evicted"}});
  metrics_.events_rejected = &m.AddCounter("strata_scheduler_kv_events_rejected_total",
                                           "KV events rejected (unknown holder, impossible tier).");
  metrics_.sequence_gaps = &m.AddCounter("strata_scheduler_kv_sequence_gaps_total",
                                         "Gaps in a holder's event sequence (each asks for an inventory).");
  metrics_.inventories = &m.AddCounter("strata_scheduler_inventories_total", "Inventories applied (resyncs).");
  metrics_.blocks_requested = &m.AddCounter("strata_scheduler_route_blocks_total", "Prompt blocks of routed requests.");
  for (Tier tier : {Tier::kGpu, Tier::kHost, Tier::kKvstoreDram, Tier::kKvstoreSsd}) {
    // A tier whose count stops growing is a tier nobody reads (silence is a bug).
    metrics_.blocks_reused[static_cast<int>(tier)] =
        &m.AddCounter("strata_scheduler_route_blocks_reused_total",
                      "Prompt blocks the chosen worker is expected to reuse, by the tier they come from.",
                      {{"tier", std::string(TierName(tier))}});
  }
  m.AddGaugeCallback("strata_scheduler_index_blocks", "Block keys in the global index.", {},
                     [this] { return static_cast<double>(IndexBlocks()); });
  m.AddGaugeCallback("strata_scheduler_index_capacity_blocks", "Capacity of the global index.", {},
                     [this] { return static_cast<double>(options_.index_capacity_blocks); });
  m.AddGaugeCallback("strata_scheduler_index_table_bytes", "Bytes of the index's hash table.", {},
                     [this] { return static_cast<double>(IndexTableBytes()); });
  m.AddGaugeCallback("strata_scheduler_resync_pending_holders",
                     "Holders whose events are dropped until their inventory arrives.", {}, [this] {
                       absl::MutexLock lock(&mutex_);
                       double pending = 0;
                       for (int slot : registry_.AllSlots()) pending += index_.resync_pending(slot) ? 1 : 0;
                       return pending;
                     });
  m.AddGaugeCallback("strata_scheduler_index_dropped_stores", "STORED keys dropped because the index was full.", {},
                     [this] {
                       absl::MutexLock lock(&mutex_);
                       return static_cast<double>(index_.dropped_stores());
                     });
}

absl::StatusOr<RegisterResult> Scheduler::Register(Registration registration) {
  RegisterResult result;
  const std::string id = registration.holder_id;
  {
    absl::MutexLock lock(&mutex_);
    const absl::Time now = clock_->Now();
    // Workers of one model must agree on how keys are made, or their keys never meet.
    if (registration.kind == HolderKind::kWorker) {
      for (int slot : registry_.WorkerSlots()) {
        const Holder& other = *registry_.FindBySlot(slot);
        const BlockKeyContext& a = other.registration.key_context;
        const BlockKeyContext& b = registration.key_context;
        if (a.model_fingerprint == b.model_fingerprint && other.registration.holder_id != id &&
            (a.block_tokens != b.block_tokens || a.kv_dtype != b.kv_dtype)) {
          if (metrics_.registrations_refused) metrics_.registrations_refused->Increment();
          return absl::FailedPreconditionError(
              StrCat("register ", id, ": block_tokens ", b.block_tokens, " / kv_dtype ", DTypeName(b.kv_dtype),
                     " differ from worker ", other.registration.holder_id, " of the same model (", a.block_tokens,
                     " / ", DTypeName(a.kv_dtype), "); their block keys would never match"));
        }
      }
    }
    // A lapsed lease the reaper has not collected yet does not block its id; nor does a live one when
    // the holder names its incarnation: the process behind the old registration restarted (or it is this
    // process, whose Register answer was lost), so the old registration is dead.
    if (Holder* old = registry_.FindById(id); old != nullptr && old->lease_expiry < now) {
      if (metrics_.lease_expiries) metrics_.lease_expiries->Increment();
      RemoveLocked(old->slot, "lease_expired");
    } else if (old != nullptr && registration.incarnation != 0) {
      LogWarning(StrCat("event=holder_replaced holder=", id, " old_epoch=", old->epoch,
                        " old_address=", old->registration.address, " old_incarnation=", old->registration.incarnation,
                        " new_address=", registration.address, " new_incarnation=", registration.incarnation));
      if (metrics_.registrations_replaced) metrics_.registrations_replaced->Increment();
      RemoveLocked(old->slot, "replaced_by_new_incarnation");
    }
    absl::StatusOr<const Holder*> holder = registry_.Register(std::move(registration), now);
    if (!holder.ok()) {
      if (metrics_.registrations_refused) metrics_.registrations_refused->Increment();
      LogWarning(StrCat("event=register_refused holder=", id.substr(0, 64),
                        " code=", absl::StatusCodeToString(holder.status().code())));
      return holder.status();
    }
    result.epoch = (*holder)->epoch;
    result.slot = (*holder)->slot;
    const HolderKind kind = *(*holder)->registration.kind;
    index_.AddHolder(result.slot, kind);
    last_event_at_[result.slot] = absl::InfinitePast();
    silence_logged_[result.slot] = false;
    if (metrics_.workers) {
      metrics_.workers->Set(static_cast<double>(registry_.CountKind(HolderKind::kWorker)));
      metrics_.kvstores->Set(static_cast<double>(registry_.CountKind(HolderKind::kKvstore)));
    }
    LogInfo(StrCat("event=holder_registered holder=", id, " kind=", KindName(kind), " epoch=", result.epoch,
                   " address=", (*holder)->registration.address));
  }
  if (metrics_registry_ != nullptr) {
    absl::MutexLock lock(&series_mutex_);
    if (silence_series_.emplace(id, 0).second) {
      metrics_registry_->AddGaugeCallback(
          "strata_scheduler_seconds_since_kv_event",
          "Seconds since the holder's last KV event or inventory; -1 when it sent none or is gone.", {{"holder", id}},
          [this, id] {
            absl::MutexLock lock(&mutex_);
            const Holder* holder = registry_.FindById(id);
            if (holder == nullptr || last_event_at_[holder->slot] == absl::InfinitePast()) return -1.0;
            return absl::ToDoubleSeconds(clock_->Now() - last_event_at_[holder->slot]);
          });
    }
  }
  return result;
}

absl::StatusOr<HeartbeatResult> Scheduler::Heartbeat(const std::string& holder_id, uint64_t epoch,
                                                     const std::optional<LoadReport>& load,
                                                     uint64_t last_event_sequence) {
  absl::MutexLock lock(&mutex_);
  const absl::Time now = clock_->Now();
  STRATA_ASSIGN_OR_RETURN(Holder * holder, registry_.Heartbeat(holder_id, epoch, now));
  if (load.has_value()) {
    holder->load = *load;
    holder->load_reported_at = now;
    const double wait_s = load->queue_wait_s > 0 ? load->queue_wait_s
                                                 : static_cast<double>(load->queued_prefill_tokens) *
                                                       holder->registration.worker.prefill_linear_s_per_token;
    holder->busy_until = now + absl::Seconds(wait_s);
  }
  // Events the holder said it had sent one heartbeat ago should have arrived by now.
  if (holder->reported_event_sequence > index_.applied_sequence(holder->slot) && !index_.resync_pending(holder->slot)) {
    LogWarning(StrCat("event=kv_events_lost holder=", holder_id, " sent=", holder->reported_event_sequence,
                      " applied=", index_.applied_sequence(holder->slot)));
    index_.RequestResync(holder->slot);
  }
  holder->reported_event_sequence = last_event_sequence;
  HeartbeatResult result;
  result.resync_required = index_.resync_pending(holder->slot);
  return result;
}

void Scheduler::RemoveLocked(int slot, std::string_view why) {
  const Holder* holder = registry_.FindBySlot(slot);
  LogInfo(StrCat("event=holder_removed holder=", holder->registration.holder_id, " reason=", why,
                 " blocks=", index_.holder_blocks(slot)));
  index_.RemoveHolder(slot);
  registry_.Remove(slot);
  if (metrics_.workers) {
    metrics_.workers->Set(static_cast<double>(registry_.CountKind(HolderKind::kWorker)));
    metrics_.kvstores->Set(static_cast<double>(registry_.CountKind(HolderKind::kKvstore)));
  }
}

absl::Status Scheduler::Deregister(const std::string& holder_id, uint64_t epoch) {
  {
    absl::MutexLock lock(&mutex_);
    STRATA_ASSIGN_OR_RETURN(Holder * holder, registry_.Find(holder_id, epoch));
    RemoveLocked(holder->slot, "deregistered");
  }
  DropDepartedSeries();
  return absl::OkStatus();
}

void Scheduler::DropDepartedSeries() {
  if (metrics_registry_ == nullptr) return;
  absl::MutexLock series_lock(&series_mutex_);
  std::vector<std::string> departed;
  {
    absl::MutexLock lock(&mutex_);
    for (const auto& [id, unused] : silence_series_) {
      if (registry_.FindById(id) == nullptr) departed.push_back(id);
    }
  }
  // A holder that registers again meanwhile waits on series_mutex_ to add its series back.
  for (const std::string& id : departed) {
    metrics_registry_->RemoveSeries("strata_scheduler_seconds_since_kv_event", {{"holder", id}});
    silence_series_.erase(id);
  }
}

absl::Status Scheduler::MarkUnreachable(const std::string& holder_id, uint64_t epoch) {
  constexpr absl::Duration kFirstBackoff = absl::Milliseconds(250);
  absl::MutexLock lock(&mutex_);
  const absl::Time now = clock_->Now();
  STRATA_ASSIGN_OR_RETURN(Holder * holder, registry_.Find(holder_id, epoch));
  if (holder->unreachable_until > now) return absl::OkStatus();
  const int doublings = std::min(holder->unreachable_strikes, 16);
  holder->unreachable_strikes = std::min(holder->unreachable_strikes + 1, 1 << 20);
  const absl::Duration backoff = std::min(kFirstBackoff * (int64_t{1} << doublings), options_.lease);
  holder->unreachable_until = now + backoff;
  if (metrics_.unreachable_marks) metrics_.unreachable_marks->Increment();
  if (holder->unreachable_strikes == 1) {
    LogWarning(StrCat("event=holder_unreachable holder=", holder_id, " epoch=", epoch,
                      " address=", holder->registration.address, " effect=out_of_placement retry=backoff"));
  }
  return absl::OkStatus();
}

absl::Status Scheduler::MarkReachable(const std::string& holder_id, uint64_t epoch) {
  absl::MutexLock lock(&mutex_);
  STRATA_ASSIGN_OR_RETURN(Holder * holder, registry_.Find(holder_id, epoch));
  if (holder->unreachable_strikes > 0) {
    LogInfo(StrCat("event=holder_reachable holder=", holder_id, " epoch=", epoch,
                   " after_reports=", holder->unreachable_strikes));
  }
  holder->unreachable_strikes = 0;
  holder->unreachable_until = absl::InfinitePast();
  return absl::OkStatus();
}

absl::StatusOr<EventsResult> Scheduler::ApplyEvents(const std::string& holder_id, uint64_t epoch,
                                                    const Inventory* inventory, const std::vector<KvEventIn>& events) {
  absl::MutexLock lock(&mutex_);
  absl::StatusOr<Holder*> found = registry_.Find(holder_id, epoch);
  if (!found.ok()) {
    if (metrics_.events_rejected) metrics_.events_rejected->Increment(static_cast<double>(events.size()));
    return found.status();
  }
  const int slot = (*found)->slot;
  last_event_at_[slot] = clock_->Now();
  silence_logged_[slot] = false;
  const uint64_t dropped_before = index_.dropped_stores();
  // Said once a minute at most while the index is full (a full index degrades routing quietly otherwise).
  auto note_full = [&] {
    const absl::Time now = clock_->Now();
    if (index_.dropped_stores() > dropped_before && now - index_full_logged_at_ > absl::Minutes(1)) {
      index_full_logged_at_ = now;
      LogWarning(StrCat("event=index_full blocks=", index_.size(), " dropped_stores=", index_.dropped_stores(),
                        " hint=raise --index-capacity-blocks"));
    }
  };
  if (inventory != nullptr) {
    absl::Status status = index_.ApplyInventory(slot, inventory->sequence, inventory->tiers, inventory->chunk);
    if (!status.ok()) {
      if (metrics_.events_rejected) metrics_.events_rejected->Increment();
      return status;
    }
    if (metrics_.inventories) metrics_.inventories->Increment();
    note_full();
    uint64_t blocks = 0;
    for (const auto& tier : inventory->tiers) blocks += tier.second.size();
    LogInfo(
        StrCat("event=inventory_applied holder=", holder_id, " sequence=", inventory->sequence, " blocks=", blocks));
  }
  EventsResult result;
  for (const KvEventIn& event : events) {
    absl::StatusOr<EventOutcome> outcome = index_.Apply(slot, event.sequence, event.type, event.tier, event.keys);
    if (!outcome.ok()) {
      if (metrics_.events_rejected) metrics_.events_rejected->Increment();
      index_.RequestResync(slot);
      LogWarning(
          StrCat("event=kv_event_rejected holder=", holder_id, " sequence=", event.sequence, " error=invalid_event"));
      return outcome.status();
    }
    if (*outcome == EventOutcome::kGap) {
      if (metrics_.sequence_gaps) metrics_.sequence_gaps->Increment();
      LogWarning(StrCat("event=kv_sequence_gap holder=", holder_id, " expected=", index_.applied_sequence(slot) + 1,
                        " got=", event.sequence));
      break;
    }
    if (*outcome == EventOutcome::kAwaitingResync) break;
    if (*outcome == EventOutcome::kApplied && metrics_.events_stored) {
      (event.type == EventType::kStored ? metrics_.events_stored : metrics_.events_evicted)->Increment();
    }
  }
  note_full();
  result.applied_sequence = index_.applied_sequence(slot);
  result.resync_required = index_.resync_pending(slot);
  return result;
}

absl::StatusOr<BlockKeyContext> Scheduler::ModelContextLocked(const Sha256Digest& fingerprint) const {
  const absl::Time now = clock_->Now();
  for (int slot : registry_.WorkerSlots()) {
    const Holder& holder = *registry_.FindBySlot(slot);
    if (holder.Routable(now) && holder.registration.key_context.model_fingerprint == fingerprint) {
      return holder.registration.key_context;
    }
  }
  return absl::UnavailableError(StrCat("route: no live worker serves model ", ToHex(fingerprint)));
}

absl::StatusOr<RouteResult> Scheduler::RouteLocked(RouteInput input) {
  const absl::Time now = clock_->Now();
  STRATA_ASSIGN_OR_RETURN(Decision decision, placer_.Place(input, registry_, index_, now));
  const Holder& holder = *registry_.FindBySlot(decision.chosen.slot);
  RouteResult result;
  result.decision = decision;
  result.worker_id = holder.registration.holder_id;
  result.worker_address = holder.registration.address;
  result.worker_epoch = holder.epoch;
  if (metrics_.route_latency) {
    metrics_.routes[static_cast<int>(decision.policy)]->Increment();
    metrics_.estimated_ttft->Observe(decision.chosen.ttft_s);
    metrics_.blocks_requested->Increment(static_cast<double>(input.keys.size()));
    for (int tier = 0; tier < 4; ++tier) metrics_.blocks_reused[tier]->Increment(decision.chosen.blocks_by_tier[tier]);
  }
  return result;
}

absl::StatusOr<RouteResult> Scheduler::Route(const TokenRoute& request) {
  const absl::Time start = absl::Now();
  absl::StatusOr<RouteResult> result = [&]() -> absl::StatusOr<RouteResult> {
    if (request.token_ids.empty()) return absl::InvalidArgumentError("route: the prompt has no tokens");
    BlockKeyContext context;
    {
      absl::MutexLock lock(&mutex_);
      STRATA_ASSIGN_OR_RETURN(context, ModelContextLocked(request.model_fingerprint));
    }
    if (!request.tenant.empty() || !request.cache_salt.empty()) {
      context.tenant_salt = TenantSalt(request.tenant, request.cache_salt);
    }
    RouteInput input;
    input.model_fingerprint = request.model_fingerprint;
    input.block_tokens = context.block_tokens;
    input.kv_dtype = context.kv_dtype;
    input.keys = ComputeBlockKeys(context, request.token_ids);  // outside the lock: ~1 µs a block
    input.prompt_tokens = request.token_ids.size();
    input.policy = request.policy.value_or(options_.default_policy);
    absl::MutexLock lock(&mutex_);
    return RouteLocked(std::move(input));
  }();
  RecordRoute(start, result);
  return result;
}

absl::StatusOr<RouteInput> Scheduler::KeyRouteInputLocked(const KeyRoute& request) const {
  STRATA_ASSIGN_OR_RETURN(BlockKeyContext context, ModelContextLocked(request.model_fingerprint));
  RouteInput input;
  input.model_fingerprint = request.model_fingerprint;
  input.block_tokens = context.block_tokens;
  input.kv_dtype = context.kv_dtype;
  input.keys = request.keys;
  input.prompt_tokens = request.prompt_tokens;
  input.policy = request.policy.value_or(options_.default_policy);
  return input;
}

void Scheduler::RecordRoute(absl::Time start, const absl::StatusOr<RouteResult>& result) {
  if (metrics_.route_latency == nullptr) return;
  metrics_.route_latency->Observe(absl::ToDoubleSeconds(absl::Now() - start));
  if (!result.ok()) metrics_.route_errors->Increment();
}

absl::StatusOr<RouteResult> Scheduler::Route(const KeyRoute& request) {
  const absl::Time start = absl::Now();
  absl::StatusOr<RouteResult> result = [&]() -> absl::StatusOr<RouteResult> {
    absl::MutexLock lock(&mutex_);
    STRATA_ASSIGN_OR_RETURN(RouteInput input, KeyRouteInputLocked(request));
    return RouteLocked(std::move(input));
  }();
  RecordRoute(start, result);
  return result;
}

absl::StatusOr<std::vector<Estimate>> Scheduler::EstimateAll(const KeyRoute& request) {
  absl::MutexLock lock(&mutex_);
  STRATA_ASSIGN_OR_RETURN(RouteInput input, KeyRouteInputLocked(request));
  return placer_.EstimateAll(input, registry_, index_, clock_->Now());
}

std::vector<std::string> Scheduler::ExpireLeases() {
  std::vector<std::string> out;
  {
    absl::MutexLock lock(&mutex_);
    for (int slot : registry_.Expired(clock_->Now())) {
      out.push_back(registry_.FindBySlot(slot)->registration.holder_id);
      LogWarning(StrCat("event=lease_expired holder=", out.back()));
      if (metrics_.lease_expiries) metrics_.lease_expiries->Increment();
      RemoveLocked(slot, "lease_expired");
    }
  }
  if (!out.empty()) DropDepartedSeries();
  return out;
}

void Scheduler::CheckSilence() {
  absl::MutexLock lock(&mutex_);
  const absl::Time now = clock_->Now();
  for (int slot : registry_.AllSlots()) {
    const Holder& holder = *registry_.FindBySlot(slot);
    const bool behind = holder.reported_event_sequence > index_.applied_sequence(slot);
    const absl::Time last = std::max(last_event_at_[slot], holder.registered_at);
    if (behind && now - last > options_.silence_warning && !silence_logged_[slot]) {
      silence_logged_[slot] = true;
      LogWarning(StrCat("event=kv_events_silent holder=", holder.registration.holder_id,
                        " seconds=", absl::ToDoubleSeconds(now - last), " sent=", holder.reported_event_sequence,
                        " applied=", index_.applied_sequence(slot)));
    }
  }
}

std::vector<HolderSnapshot> Scheduler::Holders() const {
  absl::MutexLock lock(&mutex_);
  const absl::Time now = clock_->Now();
  std::vector<HolderSnapshot> out;
  for (int slot : registry_.AllSlots()) {
    const Holder& holder = *registry_.FindBySlot(slot);
    HolderSnapshot s;
    s.holder_id = holder.registration.holder_id;
    s.kind = *holder.registration.kind;
    s.address = holder.registration.address;
    s.epoch = holder.epoch;
    s.lease_remaining_s = absl::ToDoubleSeconds(holder.lease_expiry - now);
    s.load = holder.load;
    s.blocks = index_.holder_blocks(slot);
    s.applied_sequence = index_.applied_sequence(slot);
    s.resync_pending = index_.resync_pending(slot);
    s.seconds_since_kv_event =
        last_event_at_[slot] == absl::InfinitePast() ? -1 : absl::ToDoubleSeconds(now - last_event_at_[slot]);
    s.unreachable = holder.unreachable_until > now;
    out.push_back(std::move(s));
  }
  return out;
}

uint64_t Scheduler::IndexBlocks() const {
  absl::MutexLock lock(&mutex_);
  return index_.size();
}

uint64_t Scheduler::IndexTableBytes() const {
  absl::MutexLock lock(&mutex_);
  return index_.TableBytes();
}

}  // namespace strata::scheduler
