#include "worker/engine/generate.h"

#include <algorithm>
#include <chrono>

#include "common/strings.h"

namespace strata::engine {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

absl::StatusOr<GenerateResult> Generate(Engine& engine, absl::Span<const int32_t> prompt,
                                        const GenerateOptions& options, const std::function<void(int32_t)>& on_token) {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  if (options.max_new_tokens < 0) {
    return absl::InvalidArgumentError(StrCat("max_new_tokens must be >= 0, got ", options.max_new_tokens));
  }
  STRATA_RETURN_IF_ERROR(ValidateSamplingOptions(options.sampling));
  GenerateResult result;
  if (options.max_new_tokens == 0) return result;

  // As vLLM does, generation stops at the model's context length rather than failing up front.
  const int64_t prompt_tokens = static_cast<int64_t>(prompt.size());
  const int64_t context = engine.config().max_position_embeddings;
  if (prompt_tokens >= context) {
    return absl::InvalidArgumentError(StrCat("the prompt has ", prompt_tokens, " tokens; the model's context is ",
                                             context, " (max_position_embeddings)"));
  }
  const int64_t max_new_tokens = std::min(options.max_new_tokens, context - prompt_tokens);
  // Refused here, before anything runs, when the request cannot fit its budgets or the device.
  STRATA_ASSIGN_OR_RETURN(result.memory,
                          engine.PlanMemory(prompt_tokens + max_new_tokens, prompt_tokens, options.kv_placement));
  KvPlacement placement = options.kv_placement;
  placement.plan = result.memory.residency;
  STRATA_ASSIGN_OR_RETURN(Sequence sequence, engine.NewSequence(prompt_tokens + max_new_tokens, placement));
  Sampler sampler(options.sampling, prompt);
  auto start = std::chrono::steady_clock::now();
  const int64_t last_row = prompt_tokens - 1;
  STRATA_ASSIGN_OR_RETURN(std::vector<float> logits, engine.Forward(sequence, prompt, {&last_row, 1}));
  const int64_t first_row = 0;
  while (true) {
    STRATA_ASSIGN_OR_RETURN(const int32_t token, sampler.Sample(logits));
    result.output_ids.push_back(token);
    if (on_token) on_token(token);
    if (result.output_ids.size() == 1) {
      result.prefill_seconds = SecondsSince(start);
      start = std::chrono::steady_clock::now();
    }
    if (std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(), token) !=
        options.stop_token_ids.end()) {
      result.finish_reason = FinishReason::kStopToken;
      break;
    }
    if (static_cast<int64_t>(result.output_ids.size()) == max_new_tokens) break;
    STRATA_ASSIGN_OR_RETURN(logits, engine.Forward(sequence, {&token, 1}, {&first_row, 1}));
  }
  if (result.output_ids.size() > 1) result.decode_seconds = SecondsSince(start);
  result.transfers = sequence.transfer_stats();
  return result;
}

}  // namespace strata::engine
