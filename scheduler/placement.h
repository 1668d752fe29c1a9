// Placement: which worker a request should run on.
//
// For each candidate worker (live lease, same model, block size and KV dtype) the estimated time to first
// token is queue wait + fetch of the reusable prefix blocks it does not hold in HBM (priced by the tier
// they come from: its own host DRAM over host-to-GPU, a kvstore's DRAM over the network, a kvstore's
// SSD at the slower of that kvstore's SSD read and network; a kvstore's copy counts only on the kvstore
// the worker would ask, the one rendezvous hashing over the worker's kvstores picks, common/rendezvous.h) + prefill of the tokens after the prefix it reuses. Only
// a prefix counts: after the first block found nowhere, nothing more is reusable. It reuses the prefix
// length that minimizes fetch + prefill, so a block is fetched only when that beats recomputing it.
//
// Policies: kRoundRobin takes the next live worker; kLeastLoaded the minimum queue wait; kCacheAware
// the minimum of work + w x queue, where work = fetch + prefill on that worker and
// w = load_knee / (load_knee + mean queue) (Options). With idle queues w is 1 and this is the estimated
// TTFT itself; as every queue grows, w falls, because then the work a local hit saves shortens the wait
// of every later request, while greedy TTFT would trade locality for a queue a little shorter and lose
// capacity (replay where the cluster saturates: TTFT p90 18.1 s with this rule, 32 s with plain TTFT).
// Bounded load keeps it from herding: only workers whose queue is within (1 + load_bound) x the mean + queue_slack are
// candidates, so a hot prefix spreads once its holder falls that far behind; every decision also adds
// its work to the chosen worker's queue estimate, so at low load a hot prefix spreads as soon as the
// holder's queue costs more than the prefix saves. Candidates within `tie_window` of the best are
// ties, taken in rotation, so equal workers do not herd onto one.
#ifndef STRATA_SCHEDULER_PLACEMENT_H_
#define STRATA_SCHEDULER_PLACEMENT_H_

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/block_key.h"
#include "scheduler/block_index.h"
#include "scheduler/options.h"
#include "scheduler/registry.h"

namespace strata::scheduler {

struct RouteInput {
  Sha256Digest model_fingerprint{};
  uint32_t block_tokens = 0;
  DType kv_dtype = DType::kBF16;
  std::vector<BlockKey> keys;  // the prompt's blocks, in order (a partial last block may have a key)
  uint64_t prompt_tokens = 0;
  Policy policy = Policy::kCacheAware;
};

// One candidate's estimate.
struct Estimate {
  int slot = -1;
  double queue_s = 0;
  double fetch_s = 0;
  double prefill_s = 0;
  double ttft_s = 0;
  // Leading blocks the estimate reuses, by tier they come from (Tier's order).
  std::array<uint32_t, 4> blocks_by_tier{};
  uint32_t reused_blocks = 0;
  uint64_t prefill_tokens = 0;
};

struct Decision {
  Estimate chosen;
  Policy policy = Policy::kCacheAware;
  size_t candidates = 0;
  uint32_t prompt_blocks = 0;  // keys of the request
};

// Prefill seconds of `new_tokens` after `cached_tokens` on a worker with these rates.
double PrefillSeconds(const WorkerInfo& worker, uint64_t cached_tokens, uint64_t new_tokens);

// Not thread-safe (the Scheduler serializes access); holds only the rotation counters.
class Placer {
 public:
  explicit Placer(const Options& options)
      : tie_window_s_(absl::ToDoubleSeconds(options.tie_window)),
        load_bound_(options.load_bound),
        queue_slack_s_(absl::ToDoubleSeconds(options.queue_slack)),
        load_knee_s_(absl::ToDoubleSeconds(options.load_knee)) {}

  // Estimates for every candidate, ascending slot. Empty when there is none.
  std::vector<Estimate> EstimateAll(const RouteInput& input, const Registry& registry, const BlockIndex& index,
                                    absl::Time now) const;

  // Chooses a worker and adds the request's estimated work to its queue estimate. Unavailable when no
  // live worker of that model exists; InvalidArgument for an empty prompt or more keys than tokens allow.
  absl::StatusOr<Decision> Place(const RouteInput& input, Registry& registry, const BlockIndex& index, absl::Time now);

 private:
  // The index of the best score (lowest) among `eligible`, ties within the window taken in rotation.
  size_t PickTie(const std::vector<double>& scores, const std::vector<bool>& eligible);

  double tie_window_s_;
  double load_bound_;
  double queue_slack_s_;
  double load_knee_s_;
  uint64_t round_robin_next_ = 0;
  uint64_t tie_rotation_ = 0;
};

// The queue wait the scheduler expects on `holder` at `now` (Holder::busy_until - now, at least 0).
double QueueEstimateSeconds(const Holder& holder, absl::Time now);

}  // namespace strata::scheduler

#endif  // STRATA_SCHEDULER_PLACEMENT_H_
