#include "worker/engine/logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "common/status.h"

namespace strata::engine {

PositionLogprobs LogprobsOf(absl::Span<const float> logits, int32_t token, int top_n) {
  STRATA_CHECK(token >= 0 && static_cast<size_t>(token) < logits.size());
  STRATA_CHECK(top_n >= 0);
  // log_softmax(x)_i = x_i - max - log(sum_j exp(x_j - max)).
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max_logit);
  const double log_normalizer = static_cast<double>(max_logit) + std::log(sum);
  auto logprob = [&](int32_t id) { return static_cast<float>(static_cast<double>(logits[id]) - log_normalizer); };

  PositionLogprobs out;
  out.logprob = logprob(token);
  const int64_t vocab = static_cast<int64_t>(logits.size());
  const int64_t k = std::min<int64_t>(top_n, vocab);
  if (k == 0) return out;
  std::vector<int32_t> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  auto more_likely = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), more_likely);
  out.top.reserve(k);
  for (int64_t i = 0; i < k; ++i) out.top.push_back({ids[i], logprob(ids[i])});
  return out;
}

}  // namespace strata::engine
