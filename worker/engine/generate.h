// Generate: prefill a prompt, then decode token by token until a stop token or the length limit.
#ifndef STRATA_WORKER_ENGINE_GENERATE_H_
#define STRATA_WORKER_ENGINE_GENERATE_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/engine/engine.h"
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
};

enum class FinishReason { kLength, kStopToken };

struct GenerateResult {
  std::vector<int32_t> output_ids;  // new tokens only
  FinishReason finish_reason = FinishReason::kLength;
  double prefill_seconds = 0;  // prompt forward pass and the first token
  double decode_seconds = 0;   // every later token
  MemoryPlan memory;           // what the sequence was planned to take
  KvTransferStats transfers;   // moves between the KV tiers
};

// Runs `prompt` through `engine` in a fresh sequence and generates. `on_token`, when set, sees each new
// token as soon as it is sampled (for streaming).
absl::StatusOr<GenerateResult> Generate(Engine& engine, absl::Span<const int32_t> prompt,
                                        const GenerateOptions& options,
                                        const std::function<void(int32_t)>& on_token = nullptr);

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_GENERATE_H_
