#include "scheduler/placement.h"

#include <algorithm>
#include <limits>

#include "absl/container/flat_hash_map.h"
#include "common/rendezvous.h"
#include "common/strings.h"

namespace strata::scheduler {
namespace {

// Where block i can come from for a candidate that does not hold it: the kvstore the candidate would ask
// for it, and that kvstore's tier.
enum class Remote : uint8_t { kNone, kDram, kSsd };
struct RemoteSource {
  Remote tier = Remote::kNone;
  double ssd_read_bytes_per_s = 0;  // of the kvstore that has it on SSD (kSsd)
};

// The live kvstores, by slot and by registered address (their id for rendezvous hashing).
struct LiveKvstores {
  HolderSet slots;
  absl::flat_hash_map<std::string, int> by_address;
  std::array<double, kMaxHolders> ssd_read_bytes_per_s{};
};

// Where a worker that fetches from `kvstores` (its --kvstore ids; empty: not said) finds each of the
// leading blocks of `entries`. A worker that named its kvstores asks only the one rendezvous hashing picks
// (common/rendezvous.h), so only that kvstore's copy counts, at that kvstore's rates. One that did not
// say is credited any live kvstore's copy: DRAM first, else the fastest SSD.
std::vector<RemoteSource> RemoteSources(const std::vector<std::string>& kvstores, const RouteInput& input,
                                        const std::vector<const IndexEntry*>& entries, const LiveKvstores& live) {
  std::vector<RemoteSource> out(entries.size());
  if (kvstores.empty()) {
    for (size_t i = 0; i < entries.size(); ++i) {
      const HolderSet in_kvstores = entries[i]->present & live.slots;
      if (!in_kvstores.AndNot(entries[i]->slow).Empty()) {
        out[i].tier = Remote::kDram;
        continue;
      }
      for (int slot = 0; slot < kMaxHolders; ++slot) {
        if (!in_kvstores.Has(slot)) continue;
        out[i].tier = Remote::kSsd;
        out[i].ssd_read_bytes_per_s = std::max(out[i].ssd_read_bytes_per_s, live.ssd_read_bytes_per_s[slot]);
      }
    }
    return out;
  }
  const RendezvousHash hash(kvstores);
  for (size_t i = 0; i < entries.size(); ++i) {
    auto it = live.by_address.find(kvstores[hash.Pick(input.keys[i])]);
    if (it == live.by_address.end() || !entries[i]->present.Has(it->second)) continue;
    const int slot = it->second;
    out[i].tier = entries[i]->slow.Has(slot) ? Remote::kSsd : Remote::kDram;
    out[i].ssd_read_bytes_per_s = live.ssd_read_bytes_per_s[slot];
  }
  return out;
}

bool Matches(const Holder& holder, const RouteInput& input) {
  const BlockKeyContext& context = holder.registration.key_context;
  return context.model_fingerprint == input.model_fingerprint && context.block_tokens == input.block_tokens &&
         context.kv_dtype == input.kv_dtype;
}

}  // namespace

double PrefillSeconds(const WorkerInfo& worker, uint64_t cached_tokens, uint64_t new_tokens) {
  const double p = static_cast<double>(cached_tokens);
  const double end = p + static_cast<double>(new_tokens);
  return worker.prefill_linear_s_per_token * static_cast<double>(new_tokens) +
         worker.prefill_quadratic_s_per_token2 * (end * end - p * p);
}

double QueueEstimateSeconds(const Holder& holder, absl::Time now) {
  return std::max(0.0, absl::ToDoubleSeconds(holder.busy_until - now));
}

std::vector<Estimate> Placer::EstimateAll(const RouteInput& input, const Registry& registry, const BlockIndex& index,
                                          absl::Time now) const {
  std::vector<Estimate> out;
  LiveKvstores live;
  for (int slot : registry.AllSlots()) {
    const Holder* holder = registry.FindBySlot(slot);
    if (holder->registration.kind != HolderKind::kKvstore || !holder->Routable(now)) continue;
    live.slots.Set(slot);
    live.by_address.emplace(holder->registration.address, slot);
    live.ssd_read_bytes_per_s[slot] = holder->registration.kvstore.ssd_read_bytes_per_s;
  }
  // One lookup per block, shared by every candidate. The walk stops at the first block held nowhere.
  std::vector<const IndexEntry*> entries;
  entries.reserve(input.keys.size());
  for (const BlockKey& key : input.keys) {
    const IndexEntry* entry = index.Find(key);
    if (entry == nullptr) break;
    entries.push_back(entry);
  }
  // Where each block comes from, per distinct set of kvstores the candidates fetch from (usually one).
  absl::flat_hash_map<std::vector<std::string>, std::vector<RemoteSource>> remote_by_kvstores;

  const uint64_t n = input.prompt_tokens;
  for (int slot : registry.WorkerSlots()) {
    const Holder& holder = *registry.FindBySlot(slot);
    if (!holder.Routable(now) || !Matches(holder, input)) continue;
    const WorkerInfo& worker = holder.registration.worker;
    const double bytes = static_cast<double>(worker.block_bytes);
    const double host_s = bytes / worker.host_to_gpu_bytes_per_s;
    const double dram_s = bytes / worker.network_bytes_per_s;
    auto [remote_it, inserted] = remote_by_kvstores.try_emplace(worker.kvstores);
    if (inserted) remote_it->second = RemoteSources(worker.kvstores, input, entries, live);
    const std::vector<RemoteSource>& remote = remote_it->second;
    Estimate estimate;
    estimate.slot = slot;
    estimate.queue_s = QueueEstimateSeconds(holder, now);
    double best = PrefillSeconds(worker, 0, n);
    estimate.prefill_s = best;
    estimate.prefill_tokens = n;
    double fetch_s = 0;
    std::array<uint32_t, 4> by_tier{};
    for (size_t i = 0; i < entries.size(); ++i) {
      const IndexEntry& entry = *entries[i];
      if (entry.present.Has(slot)) {
        const bool host = entry.slow.Has(slot);
        fetch_s += host ? host_s : 0.0;
        ++by_tier[static_cast<int>(host ? Tier::kHost : Tier::kGpu)];
      } else if (remote[i].tier == Remote::kDram) {
        fetch_s += dram_s;
        ++by_tier[static_cast<int>(Tier::kKvstoreDram)];
      } else if (remote[i].tier == Remote::kSsd) {
        const double ssd_rate = remote[i].ssd_read_bytes_per_s;
        fetch_s += bytes / (ssd_rate > 0 ? std::min(ssd_rate, worker.network_bytes_per_s) : worker.network_bytes_per_s);
        ++by_tier[static_cast<int>(Tier::kKvstoreSsd)];
      } else {
        break;
      }
      // At least the last token is computed: its logits start decoding.
      const uint64_t cached = std::min<uint64_t>(static_cast<uint64_t>(i + 1) * input.block_tokens, n - 1);
      const double prefill_s = PrefillSeconds(worker, cached, n - cached);
      if (fetch_s + prefill_s < best) {
        best = fetch_s + prefill_s;
        estimate.fetch_s = fetch_s;
        estimate.prefill_s = prefill_s;
        estimate.prefill_tokens = n - cached;
        estimate.reused_blocks = static_cast<uint32_t>(i + 1);
        estimate.blocks_by_tier = by_tier;
      }
    }
    estimate.ttft_s = estimate.queue_s + estimate.fetch_s + estimate.prefill_s;
    out.push_back(estimate);
  }
  return out;
}

size_t Placer::PickTie(const std::vector<double>& scores, const std::vector<bool>& eligible) {
  double best = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < scores.size(); ++i) {
    if (eligible[i]) best = std::min(best, scores[i]);
  }
  std::vector<size_t> ties;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (eligible[i] && scores[i] <= best + tie_window_s_) ties.push_back(i);
  }
  return ties[tie_rotation_++ % ties.size()];
}

absl::StatusOr<Decision> Placer::Place(const RouteInput& input, Registry& registry, const BlockIndex& index,
                                       absl::Time now) {
  if (input.prompt_tokens == 0) return absl::InvalidArgumentError("route: the prompt is empty");
  if (input.block_tokens == 0) return absl::InvalidArgumentError("route: block_tokens is 0");
  const uint64_t max_keys = (input.prompt_tokens + input.block_tokens - 1) / input.block_tokens;
  if (input.keys.size() > max_keys) {
    return absl::InvalidArgumentError(StrCat("route: ", input.keys.size(), " block keys for a prompt of ",
                                             input.prompt_tokens, " tokens in blocks of ", input.block_tokens,
                                             " (at most ", max_keys, ")"));
  }
  std::vector<Estimate> estimates = EstimateAll(input, registry, index, now);
  if (estimates.empty()) {
    return absl::UnavailableError(StrCat("route: no live worker serves model ", ToHex(input.model_fingerprint),
                                         " with block_tokens ", input.block_tokens));
  }
  size_t pick = 0;
  std::vector<double> scores(estimates.size());
  std::vector<bool> eligible(estimates.size(), true);
  switch (input.policy) {
    case Policy::kRoundRobin:
      pick = round_robin_next_++ % estimates.size();
      break;
    case Policy::kLeastLoaded:
      for (size_t i = 0; i < estimates.size(); ++i) scores[i] = estimates[i].queue_s;
      pick = PickTie(scores, eligible);
      break;
    case Policy::kCacheAware: {
      double mean_queue_s = 0;
      for (const Estimate& e : estimates) mean_queue_s += e.queue_s;
      mean_queue_s /= static_cast<double>(estimates.size());
      // The shortest queue is never above the mean, so at least one worker stays eligible.
      const double bound_s = (1 + load_bound_) * mean_queue_s + queue_slack_s_;
      const double queue_weight = load_knee_s_ / (load_knee_s_ + mean_queue_s);
      for (size_t i = 0; i < estimates.size(); ++i) {
        const Estimate& e = estimates[i];
        eligible[i] = e.queue_s <= bound_s;
        scores[i] = e.fetch_s + e.prefill_s + queue_weight * e.queue_s;
      }
      pick = PickTie(scores, eligible);
      break;
    }
  }
  Decision decision;
  decision.chosen = estimates[pick];
  decision.policy = input.policy;
  decision.candidates = estimates.size();
  decision.prompt_blocks = static_cast<uint32_t>(input.keys.size());
  Holder* chosen = registry.FindBySlot(decision.chosen.slot);
  chosen->busy_until =
      std::max(chosen->busy_until, now) + absl::Seconds(decision.chosen.fetch_s + decision.chosen.prefill_s);
  return decision;
}

}  // namespace strata::scheduler
