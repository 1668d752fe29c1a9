// Sends a list of completions to the front door with at most `concurrency` in flight, in list order, and
// keeps each result in its request's slot.
#ifndef STRATA_BENCH_CLUSTER_BURST_H_
#define STRATA_BENCH_CLUSTER_BURST_H_

#include <string>
#include <vector>

#include "bench/cluster/completion_client.h"
#include "bench/cluster/trace_prompts.h"

namespace strata::cluster_bench {

struct BurstOptions {
  std::string model;                   // the served model name
  int concurrency = 4;
  bool stream = true;
  bool disable_prefix_cache = false;
};

struct BurstResult {
  std::vector<CompletionResult> results;  // results[i] answers requests[i]
  double wall_s = 0;
};

BurstResult RunBurst(const CompletionClient& client, const std::vector<BenchRequest>& requests,
                     const BurstOptions& options);

}  // namespace strata::cluster_bench

#endif  // STRATA_BENCH_CLUSTER_BURST_H_
