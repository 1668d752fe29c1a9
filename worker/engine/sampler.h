// Sampler: picks the next token from a row of logits (greedy, temperature, top-k, top-p), seeded.
#ifndef STRATA_WORKER_ENGINE_SAMPLER_H_
#define STRATA_WORKER_ENGINE_SAMPLER_H_

#include <cstdint>
#include <random>
#include <vector>

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
  // Seeds the random stream: the same seed, options and logits give the same tokens.
  uint64_t seed = 0;
};

// OK when every field is in range (temperature >= 0, top_k >= 0, 0 < top_p <= 1).
absl::Status ValidateSamplingOptions(const SamplingOptions& options);

// Applies, in transformers' order, temperature, then top-k, then top-p, then draws from the softmax.
// Not thread-safe (owns its random stream).
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options) : options_(options), random_(options.seed) {}

  // The next token. InvalidArgument when a logit is NaN (broken weights or activations: sampling from
  // them would be noise that looks like output).
  absl::StatusOr<int32_t> Sample(absl::Span<const float> logits);

 private:
  double Uniform();  // in [0, 1), the same on every platform (not std::uniform_real_distribution)

  SamplingOptions options_;
  std::mt19937_64 random_;
  std::vector<int32_t> order_;   // scratch: candidate ids
  std::vector<double> weights_;  // scratch: their probabilities
};

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_SAMPLER_H_
