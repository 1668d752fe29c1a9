#include "scheduler/placement.h"

#include <algorithm>
#include <limits>

#include "common/strings.h"

namespace strata::scheduler {
namespace {

// Where block i can come from for a candidate that does not hold it: the fastest kvstore tier.
enum class Remote : uint8_t { kNone, kDram, kSsd };

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
  // Live kvstores and the best SSD read rate among them.
  HolderSet kvstores;
  double ssd_read_bytes_per_s = 0;
  for (int slot : registry.AllSlots()) {
    const Holder* holder = registry.FindBySlot(slot);
    if (holder->registration.kind != HolderKind::kKvstore || !holder->Routable(now)) continue;
    kvstores.Set(slot);
    ssd_read_bytes_per_s = std::max(ssd_read_bytes_per_s, holder->registration.kvstore.ssd_read_bytes_per_s);
  }
  // One lookup per block, shared by every candidate. The walk stops at the first block held nowhere.
  std::vector<const IndexEntry*> entries;
  std::vector<Remote> remote;
  entries.reserve(input.keys.size());
  remote.reserve(input.keys.size());
  for (const BlockKey& key : input.keys) {
    const IndexEntry* entry = index.Find(key);
    if (entry == nullptr) break;
    const HolderSet in_kvstores = entry->present & kvstores;
    remote.push_back(!in_kvstores.AndNot(entry->slow).Empty() ? Remote::kDram
                     : !in_kvstores.Empty()                   ? Remote::kSsd
                                                              : Remote::kNone);
    entries.push_back(entry);
  }

  const uint64_t n = input.prompt_tokens;
  for (int slot : registry.WorkerSlots()) {
    const Holder& holder = *registry.FindBySlot(slot);
    if (!holder.Routable(now) || !Matches(holder, input)) continue;
    const WorkerInfo& worker = holder.registration.worker;
    const double bytes = static_cast<double>(worker.block_bytes);
    const double host_s = bytes / worker.host_to_gpu_bytes_per_s;
    const double dram_s = bytes / worker.network_bytes_per_s;
    const double ssd_s = bytes / (ssd_read_bytes_per_s > 0 ? std::min(ssd_read_bytes_per_s, worker.network_bytes_per_s)
                                                           : worker.network_bytes_per_s);
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
      } else if (remote[i] == Remote::kDram) {
        fetch_s += dram_s;
        ++by_tier[static_cast<int>(Tier::kKvstoreDram)];
      } else if (remote[i] == Remote::kSsd) {
        fetch_s += ssd_s;
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
