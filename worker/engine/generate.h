// Generate: prefill a prompt, then decode token by token until a stop token or the length limit.
#ifndef STRATA_WORKER_ENGINE_GENERATE_H_
#define STRATA_WORKER_ENGINE_GENERATE_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/engine/engine.h"
#include "worker/engine/logprobs.h"
#include "worker/engine/sampler.h"

namespace strata::engine {

struct GenerateOptions {
  // At most this many tokens; fewer when the model's context (max_position_embeddings) ends first.
  int64_t max_new_tokens = 32;
  SamplingOptions sampling;
  // Generation ends after emitting any of these (the stop token is part of the output, as in transformers).
  std::vector<int32_t> stop_token_ids;
  // Where the sequence's KV lives (default: all in backend memory).
  KvPlacement kv_placement;
  // -1 (default): no log-probabilities. 0..kMaxTopLogprobs: each new token's logprob (logprobs.h: of
  // the raw logits) with that many most likely alternatives, in GenerateResult::logprobs.
  int top_logprobs = -1;
  // Also the prompt's tokens' logprobs (each under the logits of the rows before it), with top_logprobs
  // (0 when off) alternatives: GenerateResult::prompt_logprobs. The prefill then runs every prompt row
  // through the LM head (prompt_tokens x vocab floats at once).
  bool prompt_logprobs = false;
};

enum class FinishReason { kLength, kStopToken };

struct GenerateResult {
  std::vector<int32_t> output_ids;  // new tokens only
  FinishReason finish_reason = FinishReason::kLength;
  double prefill_seconds = 0;  // prompt forward pass and the first token
  double decode_seconds = 0;   // every later token
  MemoryPlan memory;           // what the sequence was planned to take
  KvTransferStats transfers;   // moves between the KV tiers
  std::vector<PositionLogprobs> logprobs;         // one per output id, when top_logprobs >= 0
  std::vector<PositionLogprobs> prompt_logprobs;  // prompt ids 1.. (the first has no context), when asked
};

// Runs `prompt` through `engine` in a fresh sequence and generates. `on_token`, when set, sees each new
// token as soon as it is sampled (for streaming); `on_logprobs`, when set (and top_logprobs >= 0), sees
// that token's logprobs just before; `on_prompt_logprobs`, when set (and prompt_logprobs), sees the
// prompt's once, before the first token.
absl::StatusOr<GenerateResult> Generate(
    Engine& engine, absl::Span<const int32_t> prompt, const GenerateOptions& options,
    const std::function<void(int32_t)>& on_token = nullptr,
    const std::function<void(const PositionLogprobs&)>& on_logprobs = nullptr,
    const std::function<void(absl::Span<const PositionLogprobs>)>& on_prompt_logprobs = nullptr);

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_GENERATE_H_
