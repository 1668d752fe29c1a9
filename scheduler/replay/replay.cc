#include "scheduler/replay/replay.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <queue>

#include "common/status.h"
#include "common/strings.h"
#include "scheduler/placement.h"
#include "scheduler/replay/sim_cache.h"
#include "scheduler/scheduler.h"

namespace strata::scheduler::replay {
namespace {

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t rank = static_cast<size_t>(q * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(rank, values.size() - 1)];
}

// One holder's event feed into the scheduler: consecutive changes of one kind become one event.
struct Feed {
  std::string id;
  uint64_t epoch = 0;
  uint64_t sequence = 0;
  bool worker = true;

  absl::Status Send(Scheduler& scheduler, const std::vector<CacheChange>& changes) {
    std::vector<KvEventIn> events;
    for (const CacheChange& change : changes) {
      const Tier tier =
          worker ? (change.slow ? Tier::kHost : Tier::kGpu) : (change.slow ? Tier::kKvstoreSsd : Tier::kKvstoreDram);
      if (events.empty() || events.back().type != change.type ||
          (change.type == EventType::kStored && events.back().tier != tier)) {
        KvEventIn event;
        event.sequence = ++sequence;
        event.type = change.type;
        event.tier = tier;
        events.push_back(std::move(event));
      }
      events.back().keys.push_back(TraceBlockKey(change.id));
    }
    if (events.empty()) return absl::OkStatus();
    STRATA_ASSIGN_OR_RETURN(EventsResult result, scheduler.ApplyEvents(id, epoch, nullptr, events));
    STRATA_CHECK(!result.resync_required);  // the simulation never drops an event
    return absl::OkStatus();
  }
};

struct SimWorker {
  Feed feed;
  std::unique_ptr<TwoTierLru> cache;
  std::deque<size_t> queue;
  double queued_estimate_s = 0;  // what the worker would report for its queued requests
  uint64_t queued_tokens = 0;
  bool busy = false;
  double busy_until_s = 0;
  size_t running = 0;
  uint64_t routed = 0;
};

struct SimKvstore {
  Feed feed;
  std::unique_ptr<TwoTierLru> cache;
};

struct RequestState {
  double start_s = 0;
  double service_s = 0;
  double estimate_s = 0;
  size_t reused = 0;  // leading blocks reused
  std::array<uint64_t, 4> by_tier{};
  std::vector<Tier> source;  // per reused block: the tier it came from
  uint64_t prefill_tokens = 0;
};

enum class EventKind : uint8_t { kPrefillDone = 0, kHeartbeat = 1, kArrival = 2 };
struct SimEvent {
  double time_s;
  EventKind kind;
  size_t index;
  bool operator>(const SimEvent& other) const {
    if (time_s != other.time_s) return time_s > other.time_s;
    if (kind != other.kind) return kind > other.kind;
    return index > other.index;
  }
};

class Simulation {
 public:
  Simulation(const std::vector<TraceRequest>& trace, const ReplayOptions& options, Policy policy)
      : trace_(trace), options_(options), policy_(policy), scheduler_(SchedulerOptions(options), &clock_, nullptr) {
    fingerprint_.fill(0x5a);
    block_bytes_ = options.cost.kv_bytes_per_token * options.block_tokens;
  }

  absl::StatusOr<PolicyResult> Run();

 private:
  static Options SchedulerOptions(const ReplayOptions& options) {
    Options o;
    o.lease = 5 * options.heartbeat_interval;
    o.heartbeat_interval = options.heartbeat_interval;
    o.default_policy = Policy::kCacheAware;
    return o;
  }
  absl::Status Setup();
  void SetClock(double t) { clock_.Set(absl::UnixEpoch() + absl::Seconds(t)); }
  // What the worker would do now: the reuse that minimizes fetch + prefill over its true cache state.
  RequestState Plan(const SimWorker& worker, const TraceRequest& request) const;
  void Start(size_t w, double now);
  absl::Status Finish(size_t w, double now);
  absl::Status Heartbeats();

  const std::vector<TraceRequest>& trace_;
  ReplayOptions options_;
  Policy policy_;
  SimClock clock_;
  Scheduler scheduler_;
  Sha256Digest fingerprint_{};
  uint64_t block_bytes_ = 0;
  std::vector<SimWorker> workers_;
  std::vector<SimKvstore> kvstores_;
  absl::flat_hash_map<std::string, size_t> worker_by_id_;
  std::vector<RequestState> states_;
  std::priority_queue<SimEvent, std::vector<SimEvent>, std::greater<>> events_;
  std::vector<double> ttft_s_;
  std::vector<double> route_us_;
  double last_end_s_ = 0;
  double last_prefill_end_s_ = 0;
  double busy_s_ = 0;
  size_t finished_ = 0;
};

absl::Status Simulation::Setup() {
  const CostModel& cost = options_.cost;
  for (int i = 0; i < options_.workers; ++i) {
    Registration r;
    r.holder_id = StrCat("worker-", i);
    r.kind = HolderKind::kWorker;
    r.scheme_version = kBlockKeySchemeVersion;
    r.key_context.model_fingerprint = fingerprint_;
    r.key_context.block_tokens = options_.block_tokens;
    r.address = StrCat("sim:", i);
    r.worker.gpu_kv_blocks = std::max<uint64_t>(1, options_.gpu_blocks_per_worker);
    r.worker.host_kv_blocks = options_.host_blocks_per_worker;
    r.worker.block_bytes = block_bytes_;
    r.worker.prefill_linear_s_per_token = cost.prefill_linear_s_per_token;
    r.worker.prefill_quadratic_s_per_token2 = cost.prefill_quadratic_s_per_token2;
    r.worker.host_to_gpu_bytes_per_s = cost.host_to_gpu_bytes_per_s;
    r.worker.network_bytes_per_s = cost.network_bytes_per_s;
    r.worker.decode_tokens_per_s = cost.decode_tokens_per_s;
    STRATA_ASSIGN_OR_RETURN(RegisterResult result, scheduler_.Register(r));
    SimWorker worker;
    worker.feed = Feed{r.holder_id, result.epoch, 0, true};
    worker.cache = std::make_unique<TwoTierLru>(r.worker.gpu_kv_blocks, r.worker.host_kv_blocks);
    worker_by_id_[r.holder_id] = workers_.size();
    workers_.push_back(std::move(worker));
  }
  for (int i = 0; i < options_.kvstores; ++i) {
    Registration r;
    r.holder_id = StrCat("kvstore-", i);
    r.kind = HolderKind::kKvstore;
    r.scheme_version = kBlockKeySchemeVersion;
    r.address = StrCat("sim-kv:", i);
    r.kvstore.dram_blocks = options_.kvstore_dram_blocks;
    r.kvstore.ssd_blocks = options_.kvstore_ssd_blocks;
    r.kvstore.ssd_read_bytes_per_s = cost.ssd_read_bytes_per_s;
    STRATA_ASSIGN_OR_RETURN(RegisterResult result, scheduler_.Register(r));
    SimKvstore kvstore;
    kvstore.feed = Feed{r.holder_id, result.epoch, 0, false};
    kvstore.cache = std::make_unique<TwoTierLru>(r.kvstore.dram_blocks, r.kvstore.ssd_blocks);
    kvstores_.push_back(std::move(kvstore));
  }
  return absl::OkStatus();
}

RequestState Simulation::Plan(const SimWorker& worker, const TraceRequest& request) const {
  const CostModel& cost = options_.cost;
  WorkerInfo info;
  info.prefill_linear_s_per_token = cost.prefill_linear_s_per_token;
  info.prefill_quadratic_s_per_token2 = cost.prefill_quadratic_s_per_token2;
  const double bytes = static_cast<double>(block_bytes_);
  const uint64_t n = request.input_tokens;
  RequestState plan;
  double best = PrefillSeconds(info, 0, n);
  plan.service_s = best;
  plan.prefill_tokens = n;
  double fetch_s = 0;
  std::array<uint64_t, 4> by_tier{};
  std::vector<Tier> source;
  for (size_t i = 0; i < request.hash_ids.size(); ++i) {
    const uint64_t id = request.hash_ids[i];
    const TwoTierLru::Where local = worker.cache->Find(id);
    Tier tier = Tier::kGpu;
    if (local == TwoTierLru::Where::kFast) {
      tier = Tier::kGpu;
    } else if (local == TwoTierLru::Where::kSlow) {
      tier = Tier::kHost;
      fetch_s += bytes / cost.host_to_gpu_bytes_per_s;
    } else {
      TwoTierLru::Where remote = TwoTierLru::Where::kNone;
      if (!kvstores_.empty()) remote = kvstores_[id % kvstores_.size()].cache->Find(id);
      if (remote == TwoTierLru::Where::kFast) {
        tier = Tier::kKvstoreDram;
        fetch_s += bytes / cost.network_bytes_per_s;
      } else if (remote == TwoTierLru::Where::kSlow) {
        tier = Tier::kKvstoreSsd;
        fetch_s += bytes / std::min(cost.network_bytes_per_s, cost.ssd_read_bytes_per_s);
      } else {
        break;
      }
    }
    ++by_tier[static_cast<int>(tier)];
    source.push_back(tier);
    const uint64_t cached = std::min<uint64_t>((i + 1) * options_.block_tokens, n - 1);
    const double total = fetch_s + PrefillSeconds(info, cached, n - cached);
    if (total < best) {
      best = total;
      plan.service_s = total;
      plan.reused = i + 1;
      plan.by_tier = by_tier;
      plan.prefill_tokens = n - cached;
      plan.source = source;
    }
  }
  return plan;
}

void Simulation::Start(size_t w, double now) {
  SimWorker& worker = workers_[w];
  const size_t r = worker.queue.front();
  worker.queue.pop_front();
  worker.queued_estimate_s = std::max(0.0, worker.queued_estimate_s - states_[r].estimate_s);
  worker.queued_tokens -= trace_[r].input_tokens;
  RequestState plan = Plan(worker, trace_[r]);
  plan.start_s = now;
  states_[r] = plan;
  worker.busy = true;
  worker.running = r;
  worker.busy_until_s = now + plan.service_s;
  events_.push({worker.busy_until_s, EventKind::kPrefillDone, w});
}

absl::Status Simulation::Finish(size_t w, double now) {
  SimWorker& worker = workers_[w];
  const size_t r = worker.running;
  const TraceRequest& request = trace_[r];
  const RequestState& state = states_[r];
  ttft_s_.push_back(now - request.arrival_s / options_.time_scale);
  last_prefill_end_s_ = std::max(last_prefill_end_s_, now);
  busy_s_ += state.service_s;
  last_end_s_ =
      std::max(last_end_s_, now + static_cast<double>(request.output_tokens) / options_.cost.decode_tokens_per_s);
  ++finished_;
  // Into G, leaves first so the root of the chain is the most recent (LRU then evicts leaves first).
  std::vector<uint64_t> touch(request.hash_ids.rbegin(), request.hash_ids.rend());
  std::vector<CacheChange> changes;
  worker.cache->Touch(touch, &changes);
  STRATA_RETURN_IF_ERROR(worker.feed.Send(scheduler_, changes));
  // Write-through: what the worker computed (or fetched, which the kvstore promotes), leaves first.
  if (!kvstores_.empty()) {
    std::vector<std::vector<uint64_t>> per_store(kvstores_.size());
    for (size_t i = request.hash_ids.size(); i-- > 0;) {
      const uint64_t id = request.hash_ids[i];
      SimKvstore& store = kvstores_[id % kvstores_.size()];
      // A block the worker had locally was neither computed nor fetched: the kvstore is not touched.
      const bool local = i < state.source.size() && (state.source[i] == Tier::kGpu || state.source[i] == Tier::kHost);
      if (local && store.cache->Find(id) != TwoTierLru::Where::kNone) continue;
      per_store[id % kvstores_.size()].push_back(id);
    }
    for (size_t k = 0; k < kvstores_.size(); ++k) {
      changes.clear();
      kvstores_[k].cache->Touch(per_store[k], &changes);
      STRATA_RETURN_IF_ERROR(kvstores_[k].feed.Send(scheduler_, changes));
    }
  }
  worker.busy = false;
  if (!worker.queue.empty()) Start(w, now);
  return absl::OkStatus();
}

absl::Status Simulation::Heartbeats() {
  const double now = absl::ToDoubleSeconds(clock_.Now() - absl::UnixEpoch());
  for (SimWorker& worker : workers_) {
    LoadReport load;
    load.queued_prefill_tokens = worker.queued_tokens;
    load.running_requests = worker.busy ? 1 : 0;
    load.running_tokens = worker.busy ? trace_[worker.running].input_tokens : 0;
    load.queue_wait_s = (worker.busy ? std::max(0.0, worker.busy_until_s - now) : 0.0) + worker.queued_estimate_s;
    STRATA_RETURN_IF_ERROR(
        scheduler_.Heartbeat(worker.feed.id, worker.feed.epoch, load, worker.feed.sequence).status());
  }
  for (SimKvstore& kvstore : kvstores_) {
    STRATA_RETURN_IF_ERROR(
        scheduler_.Heartbeat(kvstore.feed.id, kvstore.feed.epoch, std::nullopt, kvstore.feed.sequence).status());
  }
  return absl::OkStatus();
}

absl::StatusOr<PolicyResult> Simulation::Run() {
  STRATA_RETURN_IF_ERROR(Setup());
  const size_t count = options_.max_requests == 0 ? trace_.size() : std::min(options_.max_requests, trace_.size());
  states_.resize(count);
  for (size_t r = 0; r < count; ++r) events_.push({trace_[r].arrival_s / options_.time_scale, EventKind::kArrival, r});
  events_.push({0.0, EventKind::kHeartbeat, 0});
  const double heartbeat_s = absl::ToDoubleSeconds(options_.heartbeat_interval);
  std::vector<double> routed_at(count, 0);
  while (!events_.empty()) {
    const SimEvent event = events_.top();
    events_.pop();
    SetClock(event.time_s);
    switch (event.kind) {
      case EventKind::kArrival: {
        const TraceRequest& request = trace_[event.index];
        KeyRoute route;
        route.model_fingerprint = fingerprint_;
        route.keys.reserve(request.hash_ids.size());
        for (uint64_t id : request.hash_ids) route.keys.push_back(TraceBlockKey(id));
        route.prompt_tokens = request.input_tokens;
        route.policy = policy_;
        const absl::Time wall = absl::Now();
        STRATA_ASSIGN_OR_RETURN(RouteResult routed, scheduler_.Route(route));
        route_us_.push_back(absl::ToDoubleMicroseconds(absl::Now() - wall));
        const size_t w = worker_by_id_.at(routed.worker_id);
        SimWorker& worker = workers_[w];
        ++worker.routed;
        states_[event.index].estimate_s = Plan(worker, request).service_s;
        worker.queued_estimate_s += states_[event.index].estimate_s;
        worker.queued_tokens += request.input_tokens;
        worker.queue.push_back(event.index);
        if (!worker.busy) Start(w, event.time_s);
        break;
      }
      case EventKind::kPrefillDone:
        STRATA_RETURN_IF_ERROR(Finish(event.index, event.time_s));
        break;
      case EventKind::kHeartbeat:
        STRATA_RETURN_IF_ERROR(Heartbeats());
        scheduler_.ExpireLeases();
        if (finished_ < count) events_.push({event.time_s + heartbeat_s, EventKind::kHeartbeat, 0});
        break;
    }
  }

  PolicyResult result;
  result.policy = policy_;
  result.requests = count;
  uint64_t prompt_tokens = 0, prefill_tokens = 0;
  for (size_t r = 0; r < count; ++r) {
    result.prompt_blocks += trace_[r].hash_ids.size();
    for (int t = 0; t < 4; ++t) result.hit_blocks[t] += states_[r].by_tier[t];
    prompt_tokens += trace_[r].input_tokens;
    prefill_tokens += states_[r].prefill_tokens;
  }
  const double blocks = std::max<double>(1, static_cast<double>(result.prompt_blocks));
  result.hit_rate_gpu = static_cast<double>(result.hit_blocks[0]) / blocks;
  result.hit_rate_host = static_cast<double>(result.hit_blocks[1]) / blocks;
  result.hit_rate_kvstore_dram = static_cast<double>(result.hit_blocks[2]) / blocks;
  result.hit_rate_kvstore_ssd = static_cast<double>(result.hit_blocks[3]) / blocks;
  result.hit_rate_total =
      result.hit_rate_gpu + result.hit_rate_host + result.hit_rate_kvstore_dram + result.hit_rate_kvstore_ssd;
  result.prefill_tokens_saved = 1.0 - static_cast<double>(prefill_tokens) / static_cast<double>(prompt_tokens);
  result.ttft_p50_s = Percentile(ttft_s_, 0.50);
  result.ttft_p90_s = Percentile(ttft_s_, 0.90);
  result.ttft_p99_s = Percentile(ttft_s_, 0.99);
  const double first = trace_[0].arrival_s / options_.time_scale;
  result.throughput_req_s = static_cast<double>(count) / std::max(1e-9, last_end_s_ - first);
  result.within_slo = static_cast<double>(std::count_if(ttft_s_.begin(), ttft_s_.end(),
                                                        [&](double t) { return t <= options_.slo_ttft_s; })) /
                      static_cast<double>(count);
  result.route_us_p50 = Percentile(route_us_, 0.50);
  result.route_us_p99 = Percentile(route_us_, 0.99);
  uint64_t busiest = 0;
  for (const SimWorker& worker : workers_) busiest = std::max(busiest, worker.routed);
  result.max_worker_share = static_cast<double>(busiest) / static_cast<double>(count);
  result.worker_busy = busy_s_ / (options_.workers * std::max(1e-9, last_prefill_end_s_ - first));
  return result;
}

}  // namespace

absl::StatusOr<PolicyResult> RunReplay(const std::vector<TraceRequest>& trace, const ReplayOptions& options,
                                       Policy policy) {
  if (trace.empty()) return absl::InvalidArgumentError("replay: empty trace");
  if (options.workers < 1 || options.workers > kMaxHolders / 2) {
    return absl::InvalidArgumentError(StrCat("replay: --workers must be 1..", kMaxHolders / 2));
  }
  if (options.kvstores < 0 || options.kvstores > kMaxHolders / 2) {
    return absl::InvalidArgumentError(StrCat("replay: --kvstores must be 0..", kMaxHolders / 2));
  }
  if (!(options.time_scale > 0)) return absl::InvalidArgumentError("replay: time scale must be > 0");
  Simulation simulation(trace, options, policy);
  return simulation.Run();
}

absl::StatusOr<ReplayReport> RunPolicies(const std::vector<TraceRequest>& trace, const ReplayOptions& options,
                                         const std::vector<Policy>& policies) {
  ReplayReport report;
  report.options = options;
  std::vector<TraceRequest> used(trace.begin(), options.max_requests == 0 || options.max_requests >= trace.size()
                                                    ? trace.end()
                                                    : trace.begin() + static_cast<ptrdiff_t>(options.max_requests));
  report.ideal_hit_rate = IdealPrefixHitRate(used);
  for (Policy policy : policies) {
    STRATA_ASSIGN_OR_RETURN(PolicyResult result, RunReplay(trace, options, policy));
    result.hit_rate_of_ideal = report.ideal_hit_rate > 0 ? result.hit_rate_total / report.ideal_hit_rate : 0;
    report.results.push_back(result);
  }
  return report;
}

absl::StatusOr<std::vector<SweepPoint>> RunSweep(const std::vector<TraceRequest>& trace, ReplayOptions options,
                                                 const std::vector<Policy>& policies,
                                                 const std::vector<double>& loads) {
  std::vector<SweepPoint> sweep;
  for (double load : loads) {
    options.time_scale = load;
    STRATA_ASSIGN_OR_RETURN(ReplayReport report, RunPolicies(trace, options, policies));
    sweep.push_back({load, std::move(report.results)});
  }
  return sweep;
}

}  // namespace strata::scheduler::replay
