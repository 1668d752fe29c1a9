#include "worker/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/status.h"
#include "common/strings.h"

namespace strata::engine {

absl::Status ValidateSamplingOptions(const SamplingOptions& options) {
  if (!(options.temperature >= 0.0f) || !std::isfinite(options.temperature)) {
    return absl::InvalidArgumentError(StrCat("temperature must be >= 0, got ", options.temperature));
  }
  if (options.top_k < 0) return absl::InvalidArgumentError(StrCat("top_k must be >= 0, got ", options.top_k));
  if (!(options.top_p > 0.0f && options.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(StrCat("top_p must be in (0, 1], got ", options.top_p));
  }
  return absl::OkStatus();
}

double Sampler::Uniform() { return static_cast<double>(random_() >> 11) * 0x1.0p-53; }

absl::StatusOr<int32_t> Sampler::Sample(absl::Span<const float> logits) {
  STRATA_CHECK(!logits.empty());
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) return absl::InvalidArgumentError(StrCat("the logit of token ", i, " is NaN"));
  }
  if (options_.temperature == 0.0f) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  const int64_t vocab = static_cast<int64_t>(logits.size());
  order_.resize(vocab);
  std::iota(order_.begin(), order_.end(), 0);
  // Most likely first; ties by id so that the order (and the draw) is deterministic.
  auto more_likely = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  if (options_.top_k > 0 && options_.top_k < vocab) {
    // Everything at least as likely as the k-th token survives, ties included (TopKLogitsWarper).
    std::nth_element(order_.begin(), order_.begin() + (options_.top_k - 1), order_.end(), more_likely);
    const float kth = logits[order_[options_.top_k - 1]];
    std::erase_if(order_, [&](int32_t id) { return logits[id] < kth; });
  }
  std::sort(order_.begin(), order_.end(), more_likely);
  int64_t kept = static_cast<int64_t>(order_.size());
  const double inv_temperature = 1.0 / options_.temperature;
  const double max_logit = logits[order_[0]] * inv_temperature;
  weights_.resize(kept);
  double total = 0.0;
  for (int64_t i = 0; i < kept; ++i) {
    weights_[i] = std::exp(logits[order_[i]] * inv_temperature - max_logit);
    total += weights_[i];
  }
  if (options_.top_p < 1.0f) {
    double cumulative = 0.0;
    int64_t nucleus = 0;
    while (nucleus < kept) {
      cumulative += weights_[nucleus++] / total;
      if (cumulative >= options_.top_p) break;
    }
    kept = nucleus;
    total = std::accumulate(weights_.begin(), weights_.begin() + kept, 0.0);
  }
  double target = Uniform() * total;
  for (int64_t i = 0; i < kept; ++i) {
    target -= weights_[i];
    if (target < 0.0) return order_[i];
  }
  return order_[kept - 1];  // rounding left a sliver: the least likely kept token
}

}  // namespace strata::engine
