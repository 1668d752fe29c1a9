// The prefix cache's timing side channel across callers (CVE-2025-46570), measured against a running front
// door: a victim sends a fresh prompt, then an attacker times (TTFT) that prompt and a control prompt of
// the same length that nobody sent. Where they share a cache the first is a hit and comes back sooner;
// the ROC AUC of "victim's prompt" against "control" over the trials says how well TTFT tells them apart
// (1.0: always; 0.5: chance). The same run times the victim probing its own prompt, which must stay a hit.
#ifndef STRATA_BENCH_CLUSTER_TIMING_CHANNEL_H_
#define STRATA_BENCH_CLUSTER_TIMING_CHANNEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "bench/cluster/completion_client.h"

namespace strata::cluster_bench {

// P(a > b) for a drawn from `a` and b from `b`, ties counting half: the ROC AUC of a classifier that says
// "b" for the smaller value (Mann-Whitney U / (|a| |b|)). 0.5 when either is empty.
double RocAuc(absl::Span<const double> a, absl::Span<const double> b);

struct TimingOptions {
  std::string model = "llama3-tiny";
  int trials = 24;
  uint32_t prompt_tokens = 1536;
  int32_t vocab_size = 512;  // ids are drawn from [16, vocab_size)
  uint64_t seed = 1;
  // Who the victim and the attacker are: each its own client (API key, source address, `user`).
  CompletionClient::Options victim;
  CompletionClient::Options attacker;
  std::string victim_user;
  std::string attacker_user;
};

struct TimingReport {
  std::vector<double> hit_ttft_s;       // attacker, the victim's prompt
  std::vector<double> control_ttft_s;   // attacker, a prompt nobody sent
  std::vector<double> own_ttft_s;       // victim, its own prompt again
  double auc = 0.5;                     // RocAuc(control, hit): ~0.5 isolated, ~1.0 shared
  double own_auc = 0.5;                 // RocAuc(control, own): the channel within one caller
  uint64_t attacker_cached_tokens = 0;  // what the attacker's usage said of the victim's prompts
};

// Runs the trials in sequence (one request at a time). Unavailable naming the request for a failed call.
absl::StatusOr<TimingReport> MeasureTimingChannel(const TimingOptions& options);

}  // namespace strata::cluster_bench

#endif  // STRATA_BENCH_CLUSTER_TIMING_CHANNEL_H_
