#include "worker/service/worker_metrics.h"

namespace strata::worker {
namespace {

std::vector<double> PowersOfTwo(double last) {
  std::vector<double> bounds;
  for (double b = 1; b <= last; b *= 2) bounds.push_back(b);
  return bounds;
}

// Request latencies in seconds, 5 ms to an hour: a million-token prefill takes many minutes, and a
// histogram whose last bucket is below it says only "more than that".
std::vector<double> RequestBucketsSeconds() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600};
}

// `labels` and the model's name.
MetricLabels WithModel(const std::string& model_name, MetricLabels labels = {}) {
  labels.emplace_back("model_name", model_name);
  return labels;
}

}  // namespace

WorkerMetrics::WorkerMetrics(MetricsRegistry& r, const std::string& m)
    : requests_ok(r.AddCounter("strata_worker_requests_total", "Generate requests by outcome",
                               WithModel(m, {{"outcome", "ok"}}))),
      requests_cancelled(r.AddCounter("strata_worker_requests_total", "Generate requests by outcome",
                                      WithModel(m, {{"outcome", "cancelled"}}))),
      requests_failed(r.AddCounter("strata_worker_requests_total", "Generate requests by outcome",
                                   WithModel(m, {{"outcome", "error"}}))),
      requests_rejected(r.AddCounter("strata_worker_requests_total", "Generate requests by outcome",
                                     WithModel(m, {{"outcome", "rejected"}}))),
      prompt_tokens(
          r.AddCounter("strata_worker_prompt_tokens_total", "Prompt tokens of admitted requests", WithModel(m))),
      prefill_tokens(
          r.AddCounter("strata_worker_prefill_tokens_total", "Prompt tokens computed (not reused)", WithModel(m))),
      // Prefix hits by tier: tokens reused from tier G, H and the kvstores (over prompt_tokens: the hit rate).
      cached_tokens_gpu(r.AddCounter("strata_worker_cached_tokens_total", "Prompt tokens reused, by tier",
                                     WithModel(m, {{"tier", "gpu"}}))),
      cached_tokens_host(r.AddCounter("strata_worker_cached_tokens_total", "Prompt tokens reused, by tier",
                                      WithModel(m, {{"tier", "host"}}))),
      cached_tokens_kvstore(r.AddCounter("strata_worker_cached_tokens_total", "Prompt tokens reused, by tier",
                                         WithModel(m, {{"tier", "kvstore"}}))),
      generated_tokens(r.AddCounter("strata_worker_generated_tokens_total", "Tokens generated", WithModel(m))),
      kvstore_fetch_failures(r.AddCounter(
          "strata_worker_kvstore_fetch_failures_total",
          "kvstore fetches that failed (daemon down, transfer error, bad block): the prefix was recomputed")),
      kvstore_fetched_blocks(r.AddCounter("strata_worker_kvstore_fetched_blocks_total", "Blocks read from kvstores")),
      kvstore_written_blocks(
          r.AddCounter("strata_worker_kvstore_written_blocks_total", "Blocks written to kvstores (asynchronously)")),
      kvstore_write_failures(r.AddCounter("strata_worker_kvstore_write_failures_total",
                                          "Blocks not written to a kvstore (daemon down, queue full)")),
      kvstore_fetches_skipped(r.AddCounter("strata_worker_kvstore_fetches_skipped_total",
                                           "Prefix fetches not made: computing the blocks was judged cheaper")),
      kv_mac_failures_host(r.AddCounter("strata_worker_kv_mac_failures_total",
                                        "KV blocks whose MAC did not verify (never used; recomputed), by tier",
                                        {{"tier", "host"}})),
      kv_mac_failures_kvstore(r.AddCounter("strata_worker_kv_mac_failures_total",
                                           "KV blocks whose MAC did not verify (never used; recomputed), by tier",
                                           {{"tier", "kvstore"}})),
      batch_requests(r.AddHistogram("strata_worker_batch_requests", "Sequences in one engine step", PowersOfTwo(256))),
      batch_tokens(r.AddHistogram("strata_worker_batch_tokens", "Tokens in one engine step", PowersOfTwo(16384))),
      ttft_seconds(r.AddHistogram("strata_worker_ttft_seconds", "Admission to first token", RequestBucketsSeconds(),
                                  WithModel(m))),
      queue_seconds(r.AddHistogram("strata_worker_queue_seconds", "Admission to start of prefill",
                                   RequestBucketsSeconds(), WithModel(m))),
      e2e_seconds(r.AddHistogram("strata_worker_e2e_request_seconds",
                                 "Admission to last token of a request that finished", RequestBucketsSeconds(),
                                 WithModel(m))),
      inter_token_seconds(r.AddHistogram("strata_worker_inter_token_seconds",
                                         "Between two consecutive tokens of one request (decode)",
                                         LatencyBucketsSeconds(), WithModel(m))),
      step_seconds(
          r.AddHistogram("strata_worker_step_seconds", "One engine step (batched forward)", LatencyBucketsSeconds())),
      kvstore_fetch_seconds(r.AddHistogram("strata_worker_kvstore_fetch_seconds",
                                           "One request's prefix fetch from the kvstores (off the engine thread)",
                                           LatencyBucketsSeconds())) {}

}  // namespace strata::worker
