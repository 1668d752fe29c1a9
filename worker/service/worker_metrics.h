// The worker's Prometheus metrics (strata_worker_*), created once in one registry.
#ifndef STRATA_WORKER_SERVICE_WORKER_METRICS_H_
#define STRATA_WORKER_SERVICE_WORKER_METRICS_H_

#include <string>

#include "common/metrics.h"
#include "worker/prefix/kvstore_tier.h"

namespace strata::worker {

// The request series (outcomes, tokens, latencies) carry a `model_name` label, the served model's name,
// as vLLM's do; the engine's and the tiers' series are the worker's, whatever it serves.
struct WorkerMetrics {
  WorkerMetrics(MetricsRegistry& registry, const std::string& model_name);

  Counter& requests_ok;
  Counter& requests_cancelled;
  Counter& requests_failed;
  Counter& requests_rejected;   // queue full, draining, bad input
  Counter& prompt_tokens;
  Counter& prefill_tokens;      // computed
  Counter& cached_tokens_gpu;   // tier G
  Counter& cached_tokens_host;  // tier H
  Counter& cached_tokens_kvstore;
  Counter& generated_tokens;
  Counter& kvstore_fetch_failures;
  Counter& kvstore_fetched_blocks;
  Counter& kvstore_written_blocks;
  Counter& kvstore_write_failures;
  Counter& kvstore_fetches_skipped;  // the fetch policy judged computing cheaper
  Counter& kv_mac_failures_host;     // tier-H blocks whose MAC did not verify
  Counter& kv_mac_failures_kvstore;  // kvstore blocks whose MAC did not verify (forged, another key's)
  Histogram& batch_requests;    // sequences per engine step
  Histogram& batch_tokens;      // tokens per engine step
  Histogram& ttft_seconds;
  Histogram& queue_seconds;
  Histogram& e2e_seconds;          // admission to the last token
  Histogram& inter_token_seconds;  // one request's token to its next
  Histogram& step_seconds;
  Histogram& kvstore_fetch_seconds;

  KvStoreTierMetrics kvstore_tier() {
    return {.fetch_failures = &kvstore_fetch_failures,
            .mac_failures = &kv_mac_failures_kvstore,
            .fetched_blocks = &kvstore_fetched_blocks,
            .written_blocks = &kvstore_written_blocks,
            .write_failures = &kvstore_write_failures,
            .fetch_seconds = &kvstore_fetch_seconds};
  }
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_SERVICE_WORKER_METRICS_H_
