#include "scheduler/frontdoor/limits.h"

#include <algorithm>
#include <cmath>

#include "common/strings.h"
#include "scheduler/frontdoor/request.h"

namespace strata::frontdoor {

Admission& Admission::operator=(Admission&& other) noexcept {
  if (this != &other) {
    Release();
    limiter_ = other.limiter_;
    caller_ = other.caller_;
    other.limiter_ = nullptr;
  }
  return *this;
}

void Admission::Release() {
  if (limiter_ == nullptr) return;
  limiter_->Release(caller_);
  limiter_ = nullptr;
}

absl::StatusOr<Admission> CallerLimiter::Admit(int caller, const CallerLimits& limits, absl::Time now) {
  absl::MutexLock lock(&mutex_);
  State& state = states_[caller];
  if (limits.concurrency > 0 && state.open >= limits.concurrency) {
    absl::Status refused = ApiError(absl::StatusCode::kResourceExhausted,
                                    StrCat("Too many concurrent requests for this API key: ", state.open,
                                           " are open and the limit is ", limits.concurrency,
                                           ". Wait for one to finish and try again."),
                                    "rate_limit_exceeded", {}, 429);
    return WithRefusal(WithRetryAfter(std::move(refused), 1), "concurrency_limit");
  }
  if (limits.rate_rps > 0) {
    const double burst = limits.burst > 0 ? limits.burst : std::max(1.0, limits.rate_rps);
    if (state.refilled == absl::InfinitePast()) {
      state.tokens = burst;  // a caller starts with a full bucket
    } else if (now > state.refilled) {
      state.tokens = std::min(burst, state.tokens + absl::ToDoubleSeconds(now - state.refilled) * limits.rate_rps);
    }
    state.refilled = std::max(state.refilled, now);
    if (state.tokens < 1) {
      const int64_t retry_s = static_cast<int64_t>(std::ceil((1 - state.tokens) / limits.rate_rps));
      absl::Status refused = ApiError(
          absl::StatusCode::kResourceExhausted,
          StrCat("Rate limit reached for this API key: ", limits.rate_rps, " requests per second with bursts of ",
                 burst, ". Please try again in ", retry_s, " s."),
          "rate_limit_exceeded", {}, 429);
      return WithRefusal(WithRetryAfter(std::move(refused), std::max<int64_t>(1, retry_s)), "rate_limit");
    }
    state.tokens -= 1;
  }
  ++state.open;
  Admission admission;
  admission.limiter_ = this;
  admission.caller_ = caller;
  return admission;
}

int64_t CallerLimiter::open(int caller) {
  absl::MutexLock lock(&mutex_);
  auto found = states_.find(caller);
  return found == states_.end() ? 0 : found->second.open;
}

void CallerLimiter::Release(int caller) {
  absl::MutexLock lock(&mutex_);
  --states_[caller].open;
}

}  // namespace strata::frontdoor
