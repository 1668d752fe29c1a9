// EngineLoop: continuous batching on one engine thread, the only thread that touches the Engine.
//
// Every step runs one Engine::ForwardBatch over the running requests: one token for each request that is
// decoding, and a chunk of at most prefill_chunk_tokens prompt tokens for requests still prefilling,
// within step_token_budget tokens in all (decodes first, so running streams keep their pace while a long
// prompt is prefilled over several steps). New requests join at the start of any step; finished and
// cancelled ones leave and their KV is freed at once.
//
// Prefix reuse (worker/prefix/prefix_cache.h): before a request's first step, the longest cached run of
// its full prompt blocks joins its sequence — attached from tier G with no copy, imported in bulk from
// tier H, fetched from the kvstores on their thread while the batch keeps stepping (the request joins
// the batch when its blocks are in). When its prefill completes, after its first token is on its way,
// its blocks are stored (tier G, and written through to H and the kvstores); when it finishes, so are
// the blocks its generated tokens completed (the next turn of a conversation starts with them).
//
// Thread-safe: Submit, Load and the stop calls from any thread.
#ifndef STRATA_WORKER_SERVICE_ENGINE_LOOP_H_
#define STRATA_WORKER_SERVICE_ENGINE_LOOP_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/block_key.h"
#include "worker/engine/engine.h"
#include "worker/engine/logprobs.h"
#include "worker/engine/sampler.h"
#include "worker/prefix/prefix_cache.h"
#include "worker/service/generation_stream.h"
#include "worker/service/worker_metrics.h"

namespace strata::worker {

struct EngineLoopOptions {
  uint32_t block_tokens = 256;            // tokens per KV block (the key scheme's block size)
  int max_running_requests = 32;          // sequences in the batch at once
  int max_queued_requests = 256;          // admitted but not running; past it Submit is ResourceExhausted
  int64_t prefill_chunk_tokens = 512;     // most prompt tokens of one request in one step
  // Most tokens in one step (decodes + prefill chunks); decodes come first, but one prefill chunk always
  // runs when a request is prefilling (the step may then exceed the budget by up to a chunk).
  int64_t step_token_budget = 2048;
};

// A request as the service validated it.
struct GenerationRequest {
  std::string request_id;
  std::vector<int32_t> prompt;
  int64_t max_new_tokens = 1;  // > 0; prompt + max_new_tokens fits the context
  engine::SamplingOptions sampling;
  std::vector<int32_t> stop_token_ids;
  Sha256Digest tenant_salt{};  // all zero: no tenant
  bool use_prefix_cache = true;
  // -1: no logprobs; 0..engine::kMaxTopLogprobs: each token's logprob with that many alternatives.
  int top_logprobs = -1;
  // The prompt's logprobs too (every prefill row then reaches the LM head). REQUIRES: !use_prefix_cache
  // (cached rows have no logits).
  bool prompt_logprobs = false;
};

struct LoadSnapshot {
  uint64_t queued_requests = 0;
  uint64_t queued_prefill_tokens = 0;  // waiting requests' prompts and running requests' unprefilled rest
  uint64_t running_tokens = 0;         // context tokens of the running requests
  uint32_t running_requests = 0;
  uint64_t kv_pool_free_blocks = 0;  // of the engine's KV pool (tier G's cached blocks are not free)
};

class EngineLoop {
 public:
  // `engine`, the tiers that are given and `metrics` (may be null) must outlive the loop; tier G indexes
  // the engine's KV pool and is used on the loop's thread. `key_context` gives fingerprint, block size and
  // KV dtype; each request's tenant salt replaces its salt.
  EngineLoop(engine::Engine* engine, const EngineLoopOptions& options, const BlockKeyContext& key_context,
             PrefixCache::Tiers tiers, WorkerMetrics* metrics);
  ~EngineLoop();  // Stop()

  void Start();
  // Queues a request. ResourceExhausted when the queue is full, Unavailable once StopAccepting() ran.
  absl::StatusOr<std::shared_ptr<GenerationStream>> Submit(GenerationRequest request);
  // New requests are refused from now on; queued and running ones continue.
  void StopAccepting();
  // Waits until nothing is queued or running; false on timeout.
  bool WaitIdle(std::chrono::milliseconds timeout);
  // Ends the engine thread; requests still queued or running fail with Unavailable.
  void Stop();

  LoadSnapshot Load() const;

 private:
  struct Active;
  enum class Began { kFailed, kDeferred, kFetching, kReady };
  void Run();
  // Allocates the sequence (attaching the prefix cached in tier G) and loads the next cached blocks from
  // tier H; starts a kvstore fetch for the rest of the prefix when the kvstores may have it (the request
  // then waits for it outside the batch). kDeferred: no KV memory now while other requests run; it waits
  // at the head of the queue for them to finish.
  Began Begin(Active& active);
  // The prefix is loaded: the request joins the batch.
  void Ready(Active& active);
  void Step();
  // The prompt's blocks into the tiers.
  void Export(Active& active);
  void Finish(Active& active, engine::FinishReason reason);
  void PublishLoad();

  engine::Engine* const engine_;
  const EngineLoopOptions options_;
  PrefixCache prefix_cache_;  // engine thread only
  WorkerMetrics* const metrics_;

  mutable absl::Mutex mutex_;
  std::deque<std::unique_ptr<Active>> waiting_ ABSL_GUARDED_BY(mutex_);
  uint64_t waiting_tokens_ ABSL_GUARDED_BY(mutex_) = 0;
  bool accepting_ ABSL_GUARDED_BY(mutex_) = true;
  bool stop_ ABSL_GUARDED_BY(mutex_) = false;
  uint32_t running_count_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t running_tokens_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t running_unprefilled_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t kv_pool_free_blocks_ ABSL_GUARDED_BY(mutex_) = 0;

  // Requests whose kvstore fetch is under way: owned here, their results land in fetched_.
  std::vector<std::unique_ptr<Active>> fetching_;  // engine thread only
  std::vector<Active*> fetched_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::unique_ptr<Active>> running_;  // engine thread only
  std::thread thread_;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_SERVICE_ENGINE_LOOP_H_
