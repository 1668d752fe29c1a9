#include "worker/prefix/fetch_policy.h"

#include <cmath>
#include <tuple>

namespace strata::worker {

void ForgetfulFit::Observe(double x0, double x1, double y) {
  s00_ = forget_ * s00_ + x0 * x0;
  s01_ = forget_ * s01_ + x0 * x1;
  s11_ = forget_ * s11_ + x1 * x1;
  s0y_ = forget_ * s0y_ + x0 * y;
  s1y_ = forget_ * s1y_ + x1 * y;
  ++observations_;
}

std::optional<std::pair<double, double>> ForgetfulFit::Coefficients() const {
  const double det = s00_ * s11_ - s01_ * s01_;
  // Observations that do not tell the two features apart (all of one shape) leave it undetermined.
  if (!(std::abs(det) > 1e-9 * s00_ * s11_) || s00_ <= 0 || s11_ <= 0) return std::nullopt;
  const double c0 = (s0y_ * s11_ - s1y_ * s01_) / det;
  const double c1 = (s1y_ * s00_ - s0y_ * s01_) / det;
  if (!(c0 >= 0) || !(c1 >= 0)) return std::nullopt;
  return std::make_pair(c0, c1);
}

FetchPolicy::FetchPolicy(const FetchPolicyOptions& options)
    : options_(options), prefill_(options.forget), fetch_(options.forget) {}

void FetchPolicy::ObservePrefill(double linear_tokens, double quadratic_tokens, double seconds) {
  if (linear_tokens <= 0 || seconds <= 0) return;
  absl::MutexLock lock(&mutex_);
  prefill_.Observe(linear_tokens, quadratic_tokens, seconds);
}

void FetchPolicy::ObserveFetch(uint64_t bytes, double seconds) {
  if (bytes == 0 || seconds <= 0) return;
  absl::MutexLock lock(&mutex_);
  fetch_.Observe(1.0, static_cast<double>(bytes), seconds);
}

FetchPolicy::Estimate FetchPolicy::Judge(int64_t cached_tokens, int64_t tokens, uint64_t bytes) const {
  double linear = options_.prefill_s_per_token, quadratic = 0;
  double latency = 0, per_byte = 1.0 / options_.fetch_bytes_per_s;
  {
    absl::MutexLock lock(&mutex_);
    if (prefill_.observations() >= options_.min_observations) {
      if (auto fit = prefill_.Coefficients()) std::tie(linear, quadratic) = *fit;
    }
    if (fetch_.observations() >= options_.min_observations) {
      if (auto fit = fetch_.Coefficients()) {
        std::tie(latency, per_byte) = *fit;
      } else if (fetch_.SlopeOfSecond() > 0) {  // fetches all of one size: their mean rate
        latency = 0;
        per_byte = fetch_.SlopeOfSecond();
      }
    }
  }
  Estimate estimate;
  estimate.compute_s = linear * Linear(cached_tokens, tokens) + quadratic * Quadratic(cached_tokens, tokens);
  estimate.fetch_s = latency + per_byte * static_cast<double>(bytes);
  return estimate;
}

bool FetchPolicy::ShouldFetch(int64_t cached_tokens, int64_t tokens, uint64_t bytes) {
  {
    absl::MutexLock lock(&mutex_);
    if (fetch_.observations() < options_.min_observations) return true;
  }
  if (Judge(cached_tokens, tokens, bytes).fetch()) return true;
  absl::MutexLock lock(&mutex_);
  return ++advised_against_ % kExploreEvery == 0;
}

}  // namespace strata::worker
