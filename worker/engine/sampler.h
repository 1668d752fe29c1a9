// Sampler: picks the next token from a row of logits (greedy, temperature, top-k, top-p, min-p, and
// vLLM's repetition, frequency and presence penalties), seeded.
#ifndef STRATA_WORKER_ENGINE_SAMPLER_H_
#define STRATA_WORKER_ENGINE_SAMPLER_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace strata::engine {

struct SamplingOptions {
  // 0: greedy (argmax, lowest id on ties). Otherwise logits are divided by it before softmax.
  float temperature = 0.0f;
  // Keep the k most likely tokens (and any tied with the k-th, as transformers does); 0 keeps all.
  int64_t top_k = 0;
  // Keep the smallest set of most likely tokens whose probability reaches top_p; 1 keeps all.
  float top_p = 1.0f;
  // Then drop the tokens less likely than min_p times the most likely one (MinPLogitsWarper); 0 keeps all.
  float min_p = 0.0f;
  // Penalties, on the logits before everything else (greedy included), in vLLM's order. Repetition
  // (transformers' RepetitionPenaltyLogitsProcessor): a token of the prompt or of the output so far has
  // its logit divided by it when positive, multiplied by it otherwise; 1 is off.
  float repetition_penalty = 1.0f;
  // OpenAI's: logit -= frequency_penalty * n + presence_penalty * (n > 0), n = how many times the token
  // was generated so far (the prompt does not count, as in vLLM); 0 is off.
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  // Seeds the random stream: the same seed, options and logits give the same tokens.
  uint64_t seed = 0;
};

// OK when every field is in range (temperature >= 0, top_k >= 0, 0 < top_p <= 1, 0 <= min_p <= 1,
// repetition_penalty > 0, frequency and presence penalties in [-2, 2]; all finite).
absl::Status ValidateSamplingOptions(const SamplingOptions& options);

// Applies the penalties, then, in transformers' order, temperature, top-k, top-p and min-p, then draws
// from the softmax. Every token it returns counts as generated for the penalties of the next calls.
// Not thread-safe (owns its random stream and the request's history).
class Sampler {
 public:
  // `prompt`: the request's prompt ids, read (and kept, deduplicated) only when the repetition penalty
  // is on.
  explicit Sampler(const SamplingOptions& options, absl::Span<const int32_t> prompt = {});

  // The next token. InvalidArgument when a logit is NaN (broken weights or activations: sampling from
  // them would be noise that looks like output).
  absl::StatusOr<int32_t> Sample(absl::Span<const float> logits);

 private:
  double Uniform();  // in [0, 1), the same on every platform (not std::uniform_real_distribution)
  // `logits` with the penalties applied (a copy in penalized_), or `logits` itself when none is on.
  absl::Span<const float> Penalize(absl::Span<const float> logits);
  int32_t Draw(absl::Span<const float> logits);

  SamplingOptions options_;
  std::mt19937_64 random_;
  std::vector<int32_t> prompt_ids_;                     // sorted, unique; repetition penalty only
  absl::flat_hash_map<int32_t, int32_t> generated_;     // token -> times generated
  std::vector<float> penalized_;  // scratch: the penalized logits
  std::vector<int32_t> order_;    // scratch: candidate ids
  std::vector<double> weights_;   // scratch: their probabilities
};

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_SAMPLER_H_
