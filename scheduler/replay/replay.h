// Trace replay: a simulated cluster (workers with HBM and host KV, kvstores with DRAM and SSD) driven
// by the real Scheduler (registry, index, placement) on a simulated clock. Only time and the engine are
// simulated; every routing decision, KV event, heartbeat and index lookup goes through the code the
// daemon runs.
//
// The model: each worker runs prefills one at a time in arrival order (its queue is the TTFT's wait);
// a request reuses the longest prefix worth reusing (its own G and H, then the kvstores' S and D,
// priced by cost_model.h), computes the rest, then stores all its blocks in G (LRU, demoting to H) and
// writes the blocks it computed or fetched through to a kvstore (chosen by block id). Decode runs beside
// prefill at the batch-1 rate and only sets completion times. Blocks are the trace's 512-token blocks,
// a partial last block included (the trace's own hash ids say when it is shared).
#ifndef STRATA_SCHEDULER_REPLAY_REPLAY_H_
#define STRATA_SCHEDULER_REPLAY_REPLAY_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "scheduler/options.h"
#include "scheduler/replay/cost_model.h"
#include "scheduler/replay/trace.h"

namespace strata::scheduler::replay {

struct ReplayOptions {
  int workers = 4;
  // Per worker: tier G, 50 GiB of an H100's 80 GB left for KV after 16 GB of bf16 Llama-3-8B weights and
  // runtime (800 blocks of 64 MiB = 409,600 tokens); tier H, 256 GiB of pinned host DRAM (a 2 TiB,
  // 8-GPU host split eight ways).
  uint64_t gpu_blocks_per_worker = 800;
  uint64_t host_blocks_per_worker = 4096;
  // kvstores (0: none): 512 GiB DRAM and 2 TiB SSD each.
  int kvstores = 1;
  uint64_t kvstore_dram_blocks = 8192;
  uint64_t kvstore_ssd_blocks = 32768;
  uint32_t block_tokens = 512;  // the trace's
  double time_scale = 1.0;      // arrival = timestamp / time_scale (2: twice the load)
  double slo_ttft_s = 5.0;      // share of requests with TTFT within this
  absl::Duration heartbeat_interval = absl::Seconds(1);
  size_t max_requests = 0;  // 0: the whole trace
  CostModel cost;
};

// One policy's row of the report; field names are the table's and the JSON's.
struct PolicyResult {
  Policy policy = Policy::kCacheAware;
  uint64_t requests = 0;
  uint64_t prompt_blocks = 0;
  std::array<uint64_t, 4> hit_blocks{};  // by Tier
  double hit_rate_gpu = 0, hit_rate_host = 0, hit_rate_kvstore_dram = 0, hit_rate_kvstore_ssd = 0;
  double hit_rate_total = 0;
  double hit_rate_of_ideal = 0;
  double prefill_tokens_saved = 0;  // share of prompt tokens not computed
  double ttft_p50_s = 0, ttft_p90_s = 0, ttft_p99_s = 0;
  double throughput_req_s = 0;                // requests over first arrival .. last decode end
  double within_slo = 0;                      // share of requests with TTFT <= slo
  double route_us_p50 = 0, route_us_p99 = 0;  // wall time of Scheduler::Route on this machine
  double max_worker_share = 0;                // busiest worker's share of requests (herding shows here)
  double worker_busy = 0;  // prefill+fetch seconds over workers x (first arrival .. last prefill end)
};

absl::StatusOr<PolicyResult> RunReplay(const std::vector<TraceRequest>& trace, const ReplayOptions& options,
                                       Policy policy);

struct ReplayReport {
  ReplayOptions options;
  double ideal_hit_rate = 0;
  std::vector<PolicyResult> results;
};

// Runs each policy on the same trace and options; fills hit_rate_of_ideal.
absl::StatusOr<ReplayReport> RunPolicies(const std::vector<TraceRequest>& trace, const ReplayOptions& options,
                                         const std::vector<Policy>& policies);

// Columns: policies; rows: the PolicyResult fields by name.
std::string FormatTable(const ReplayReport& report);
// {"config": {...}, "ideal_hit_rate": x, "policies": {"round-robin": {<field>: value, ...}, ...}}
std::string FormatJson(const ReplayReport& report);

// Each policy at each load (`options.time_scale` replaced by each of `loads`).
struct SweepPoint {
  double time_scale = 1;
  std::vector<PolicyResult> results;
};
absl::StatusOr<std::vector<SweepPoint>> RunSweep(const std::vector<TraceRequest>& trace, ReplayOptions options,
                                                 const std::vector<Policy>& policies, const std::vector<double>& loads);
// TTFT p90, total hit rate and share within the SLO, per load and policy.
std::string FormatSweepTable(const std::vector<SweepPoint>& sweep);
// {"sweep": [{"time_scale": x, "policies": {"cache-aware": {<field>: value, ...}, ...}}, ...]}
std::string FormatSweepJson(const std::vector<SweepPoint>& sweep);
// TTFT p90 vs load per policy as a PNG: writes `<png>.dat` and `<png>.gp` beside it and runs gnuplot.
// Unavailable when gnuplot fails.
absl::Status PlotSweep(const std::vector<SweepPoint>& sweep, const ReplayOptions& options, const std::string& png_path);

}  // namespace strata::scheduler::replay

#endif  // STRATA_SCHEDULER_REPLAY_REPLAY_H_
