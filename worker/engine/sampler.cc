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
  if (!(options.min_p >= 0.0f && options.min_p <= 1.0f)) {
    return absl::InvalidArgumentError(StrCat("min_p must be in [0, 1], got ", options.min_p));
  }
  if (!(options.repetition_penalty > 0.0f) || !std::isfinite(options.repetition_penalty)) {
    return absl::InvalidArgumentError(StrCat("repetition_penalty must be > 0, got ", options.repetition_penalty));
  }
  if (!(options.frequency_penalty >= -2.0f && options.frequency_penalty <= 2.0f)) {
    return absl::InvalidArgumentError(StrCat("frequency_penalty must be in [-2, 2], got ", options.frequency_penalty));
  }
  if (!(options.presence_penalty >= -2.0f && options.presence_penalty <= 2.0f)) {
    return absl::InvalidArgumentError(StrCat("presence_penalty must be in [-2, 2], got ", options.presence_penalty));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingOptions& options, absl::Span<const int32_t> prompt)
    : options_(options), random_(options.seed) {
  if (options_.repetition_penalty != 1.0f) {
    prompt_ids_.assign(prompt.begin(), prompt.end());
    std::sort(prompt_ids_.begin(), prompt_ids_.end());
    prompt_ids_.erase(std::unique(prompt_ids_.begin(), prompt_ids_.end()), prompt_ids_.end());
  }
}

double Sampler::Uniform() { return static_cast<double>(random_() >> 11) * 0x1.0p-53; }

absl::StatusOr<int32_t> Sampler::Sample(absl::Span<const float> raw_logits) {
  STRATA_CHECK(!raw_logits.empty());
  for (size_t i = 0; i < raw_logits.size(); ++i) {
    if (std::isnan(raw_logits[i])) return absl::InvalidArgumentError(StrCat("the logit of token ", i, " is NaN"));
  }
  const int32_t token = Draw(Penalize(raw_logits));
  if (options_.repetition_penalty != 1.0f || options_.frequency_penalty != 0.0f || options_.presence_penalty != 0.0f) {
    ++generated_[token];
  }
  return token;
}

absl::Span<const float> Sampler::Penalize(absl::Span<const float> logits) {
  const float repetition = options_.repetition_penalty;
  if (repetition == 1.0f && options_.frequency_penalty == 0.0f && options_.presence_penalty == 0.0f) return logits;
  penalized_.assign(logits.begin(), logits.end());
  const int32_t vocab = static_cast<int32_t>(logits.size());
  // Ids past the vocabulary (a caller's bug the worker refuses before here) have no logit to penalize.
  auto repeat = [&](int32_t id) {
    if (id < 0 || id >= vocab) return;
    float& logit = penalized_[id];
    logit = logit > 0.0f ? logit / repetition : logit * repetition;
  };
  if (repetition != 1.0f) {
    for (int32_t id : prompt_ids_) repeat(id);
    for (const auto& [id, count] : generated_) {
      if (!std::binary_search(prompt_ids_.begin(), prompt_ids_.end(), id)) repeat(id);  // once per token
    }
  }
  for (const auto& [id, count] : generated_) {
    if (id < 0 || id >= vocab) continue;
    penalized_[id] -= options_.frequency_penalty * static_cast<float>(count) + options_.presence_penalty;
  }
  return penalized_;
}

int32_t Sampler::Draw(absl::Span<const float> logits) {
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
  }
  if (options_.min_p > 0.0f) {
    // weights_[0] is the most likely token's (exp(0) = 1): the ratio of probabilities needs no softmax.
    const double floor = options_.min_p * weights_[0];
    int64_t above = 1;
    while (above < kept && weights_[above] >= floor) ++above;
    kept = above;
  }
  total = std::accumulate(weights_.begin(), weights_.begin() + kept, 0.0);
  double target = Uniform() * total;
  for (int64_t i = 0; i < kept; ++i) {
    target -= weights_[i];
    if (target < 0.0) return order_[i];
  }
  return order_[kept - 1];  // rounding left a sliver: the least likely kept token
}

}  // namespace strata::engine
