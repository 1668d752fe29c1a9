// Log-probabilities of tokens under a row of logits, as OpenAI's `logprobs` report them.
//
// Which distribution: the model's own, log_softmax of the raw logits, before the penalties, temperature,
// top-k, top-p and min-p that the sampler applies (vLLM's default, logprobs_mode=raw_logprobs). So a
// token's logprob does not depend on how it was drawn, and greedy and sampled requests report the same
// numbers for the same prefix. Both backends hand the engine's logits to the host (Engine::Forward), so
// this one CPU computation serves CPU and CUDA workers alike.
#ifndef STRATA_WORKER_ENGINE_LOGPROBS_H_
#define STRATA_WORKER_ENGINE_LOGPROBS_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace strata::engine {

// OpenAI's limit on top_logprobs (and vLLM's default max_logprobs is 20 too).
inline constexpr int kMaxTopLogprobs = 20;

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

// One position of a sequence: the log-probability of the token that is there (the one sampled, or the
// prompt's), and the `top_n` most likely tokens at that position, most likely first (ties: lower id first).
struct PositionLogprobs {
  float logprob = 0.0f;
  std::vector<TokenLogprob> top;
};

// log_softmax(logits)[token] and the top_n most likely tokens, accumulated in double. A NaN logit gives
// NaN logprobs (the sampler refuses such a row before any is reported). -inf logits give -inf.
// REQUIRES: 0 <= token < logits.size(); 0 <= top_n.
PositionLogprobs LogprobsOf(absl::Span<const float> logits, int32_t token, int top_n);

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_LOGPROBS_H_
