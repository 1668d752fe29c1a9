// GenerationStream: one request's tokens on their way from the engine thread (producer) to the RPC
// that streams them (consumer), and the consumer's cancellation on the way back. Thread-safe.
#ifndef STRATA_WORKER_SERVICE_GENERATION_STREAM_H_
#define STRATA_WORKER_SERVICE_GENERATION_STREAM_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/engine/generate.h"
#include "worker/engine/logprobs.h"

namespace strata::worker {

// What the last message reports.
struct GenerationSummary {
  engine::FinishReason finish_reason = engine::FinishReason::kLength;
  int64_t completion_tokens = 0;
  int64_t prompt_tokens = 0;
  int64_t cached_tokens_gpu = 0;
  int64_t cached_tokens_host = 0;
  int64_t cached_tokens_kvstore = 0;
  int64_t prefill_tokens = 0;  // computed
  double queue_s = 0;          // admitted -> prefill started
  double ttft_s = 0;           // admitted -> first token
  double decode_s = 0;         // first token -> last token
};

class GenerationStream {
 public:
  struct Update {
    std::vector<int32_t> tokens;  // new since the previous Next()
    std::vector<engine::PositionLogprobs> logprobs;         // one per token, when the request asked
    std::vector<engine::PositionLogprobs> prompt_logprobs;  // once, with the first token, when asked
    bool done = false;            // nothing follows
    absl::Status status;          // when done: OK (then summary is set) or why it failed
    std::optional<GenerationSummary> summary;
  };
  // Consumer: waits up to `timeout` for tokens or the end; an empty, not-done update on timeout.
  Update Next(absl::Duration timeout);
  // Consumer: the caller went away; the engine drops the request at its next step.
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

  // Producer (engine thread).
  // `logprobs`: the token's, when the request asked for them.
  void Push(int32_t token, std::optional<engine::PositionLogprobs> logprobs = std::nullopt);
  // The prompt's logprobs (before the first Push).
  void PushPromptLogprobs(std::vector<engine::PositionLogprobs> logprobs);
  void Finish(const GenerationSummary& summary);
  void Fail(const absl::Status& status);

 private:
  absl::Mutex mutex_;
  std::vector<int32_t> tokens_ ABSL_GUARDED_BY(mutex_);
  std::vector<engine::PositionLogprobs> logprobs_ ABSL_GUARDED_BY(mutex_);
  std::vector<engine::PositionLogprobs> prompt_logprobs_ ABSL_GUARDED_BY(mutex_);
  bool done_ ABSL_GUARDED_BY(mutex_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mutex_);
  std::optional<GenerationSummary> summary_ ABSL_GUARDED_BY(mutex_);
  std::atomic<bool> cancelled_{false};
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_SERVICE_GENERATION_STREAM_H_
