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

absl::StatusOr<GenerateResult> Generate(
    Engine& engine, absl::Span<const int32_t> prompt, const GenerateOptions& options,
    const std::function<void(int32_t)>& on_token, const std::function<void(const PositionLogprobs&)>& on_logprobs,
    const std::function<void(absl::Span<const PositionLogprobs>)>& on_prompt_logprobs) {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  if (options.max_new_tokens < 0) {
    return absl::InvalidArgumentError(StrCat("max_new_tokens must be >= 0, got ", options.max_new_tokens));
  }
  STRATA_RETURN_IF_ERROR(ValidateSamplingOptions(options.sampling));
  if (options.top_logprobs < -1 || options.top_logprobs > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(
        StrCat("top_logprobs must be in [-1, ", kMaxTopLogprobs, "], got ", options.top_logprobs));
  }
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
  const int64_t vocab = engine.config().vocab_size;
  // The last prompt row's logits pick the first token; with prompt logprobs every row's are wanted.
  std::vector<int64_t> rows;
  for (int64_t r = options.prompt_logprobs ? 0 : prompt_tokens - 1; r < prompt_tokens; ++r) rows.push_back(r);
  STRATA_ASSIGN_OR_RETURN(std::vector<float> logits, engine.Forward(sequence, prompt, rows));
  if (options.prompt_logprobs) {
    const int top = std::max(options.top_logprobs, 0);
    for (int64_t r = 0; r + 1 < prompt_tokens; ++r) {
      result.prompt_logprobs.push_back(
          LogprobsOf(absl::MakeConstSpan(logits).subspan(r * vocab, vocab), prompt[r + 1], top));
    }
    logits.erase(logits.begin(), logits.end() - vocab);
    if (on_prompt_logprobs) on_prompt_logprobs(result.prompt_logprobs);
  }
  const int64_t first_row = 0;
  while (true) {
    STRATA_ASSIGN_OR_RETURN(const int32_t token, sampler.Sample(logits));
    if (options.top_logprobs >= 0) {
      result.logprobs.push_back(LogprobsOf(logits, token, options.top_logprobs));
      if (on_logprobs) on_logprobs(result.logprobs.back());
    }
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
