// The load generator's results: one summary per pass (cache off, cache on, or a placement policy) and the
// table and JSON that compare them.
#ifndef STRATA_BENCH_CLUSTER_REPORT_H_
#define STRATA_BENCH_CLUSTER_REPORT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/cluster/completion_client.h"

namespace strata::cluster_bench {

struct PassSummary {
  std::string name;                  // e.g. "cache off", "cache on"
  uint32_t requests = 0, failed = 0;
  std::string first_error;
  double wall_s = 0;                 // first request sent -> last answer
  uint64_t prompt_tokens = 0;        // of the successful requests, as the server counted them
  uint64_t cached_tokens = 0;        // usage.prompt_tokens_details.cached_tokens
  uint64_t cached_gpu = 0, cached_host = 0, cached_kvstore = 0;  // usage.strata
  uint64_t prefill_tokens = 0;
  uint64_t reusable_tokens = 0;      // what an infinite cache would reuse (the trace's ceiling)
  uint64_t completion_tokens = 0;
  double ttft_p50_s = 0, ttft_p90_s = 0, ttft_mean_s = 0;
  double output_tokens_per_s = 0;    // completion tokens of the pass / wall_s
  std::map<std::string, uint32_t> requests_per_worker;

  double hit_rate() const { return prompt_tokens ? static_cast<double>(cached_tokens) / prompt_tokens : 0; }
  double tier_rate(uint64_t tokens) const { return prompt_tokens ? static_cast<double>(tokens) / prompt_tokens : 0; }
};

// Nearest-rank percentile (q in [0, 1]) of `values`; 0 for none.
double Percentile(std::vector<double> values, double q);

// `reusable_tokens[i]` belongs to results[i] (BenchRequest::reusable_tokens).
PassSummary Summarize(std::string name, const std::vector<CompletionResult>& results,
                      const std::vector<uint32_t>& reusable_tokens, double wall_s);

// The comparison table: a row per quantity, a column per pass.
std::string FormatTable(const std::vector<PassSummary>& passes);
nlohmann::json ToJson(const std::vector<PassSummary>& passes);

}  // namespace strata::cluster_bench

#endif  // STRATA_BENCH_CLUSTER_REPORT_H_
