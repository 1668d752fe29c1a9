// FetchPolicy: whether the blocks of a prompt that tiers G and H miss are worth fetching from the
// kvstores, or cheaper to compute — judged from what this worker measured itself:
//  - its prefill time, seconds = linear * n + quadratic * n * (p + n / 2) for n new tokens after p
//    cached ones (the quadratic term is attention over the earlier tokens), fitted by least squares over
//    its recent prefill steps (older ones forgotten exponentially); until it has a fit, the start-up
//    calibration's rate and no quadratic term;
//  - its fetch time, latency + bytes / bandwidth (kvstore to the engine's pool: the fetch and the import),
//    fitted the same way over its recent fetches. Until it has measured a few, it fetches (to measure);
//    after that, one fetch in kExploreEvery judged too slow is made anyway, so that the measurement
//    follows a link that got faster.
// Fetching k blocks saves more than it costs the further they go (later tokens cost more to compute,
// every byte the same to fetch), so the answer is the whole run or nothing.
// Thread-safe.
#ifndef STRATA_WORKER_PREFIX_FETCH_POLICY_H_
#define STRATA_WORKER_PREFIX_FETCH_POLICY_H_

#include <cstdint>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace strata::worker {

// y ≈ c0 * x0 + c1 * x1 by least squares, each observation's weight multiplied by `forget` per later one.
class ForgetfulFit {
 public:
  explicit ForgetfulFit(double forget) : forget_(forget) {}
  void Observe(double x0, double x1, double y);
  // The coefficients, once the observations determine both and both are >= 0; else nothing.
  std::optional<std::pair<double, double>> Coefficients() const;
  // c1 of y ≈ c1 * x1 alone (when the observations cannot tell the two apart); 0 before any.
  double SlopeOfSecond() const { return s11_ > 0 ? s1y_ / s11_ : 0; }
  int64_t observations() const { return observations_; }

 private:
  double forget_;
  double s00_ = 0, s01_ = 0, s11_ = 0, s0y_ = 0, s1y_ = 0;
  int64_t observations_ = 0;
};

struct FetchPolicyOptions {
  double prefill_s_per_token = 1e-4;  // until fitted: the linear term (the start-up calibration's rate)
  double fetch_bytes_per_s = 1e9;     // the bandwidth when the fetches so far cannot be fitted
  double forget = 0.97;               // weight kept by an observation per later one
  int64_t min_observations = 4;       // before a fit replaces the prior
};

class FetchPolicy {
 public:
  explicit FetchPolicy(const FetchPolicyOptions& options);

  // A step that prefilled: Linear and Quadratic summed over its prefilling sequences, and its seconds
  // (its decodes, a small part of a prefill step, are counted in).
  void ObservePrefill(double linear_tokens, double quadratic_tokens, double seconds);
  // A fetch that delivered `bytes` into the pool in `seconds` (from asking the kvstores to imported).
  void ObserveFetch(uint64_t bytes, double seconds);

  struct Estimate {
    double compute_s = 0;  // of the tokens, after the cached ones
    double fetch_s = 0;    // of their bytes
    bool fetch() const { return fetch_s < compute_s; }
  };
  // The estimates from the measurements so far (the priors where there are too few).
  Estimate Judge(int64_t cached_tokens, int64_t tokens, uint64_t bytes) const;
  // Whether to fetch: until min_observations fetches are measured, yes; then as Judge says, but one in
  // kExploreEvery of the fetches it advises against is made anyway.
  bool ShouldFetch(int64_t cached_tokens, int64_t tokens, uint64_t bytes);
  static constexpr int64_t kExploreEvery = 16;

  // The prefill model's two features for `tokens` new tokens after `cached_tokens`.
  static double Linear(int64_t /*cached_tokens*/, int64_t tokens) { return static_cast<double>(tokens); }
  static double Quadratic(int64_t cached_tokens, int64_t tokens) {
    return static_cast<double>(tokens) * (static_cast<double>(cached_tokens) + 0.5 * static_cast<double>(tokens));
  }

 private:
  const FetchPolicyOptions options_;
  mutable absl::Mutex mutex_;
  ForgetfulFit prefill_ ABSL_GUARDED_BY(mutex_);
  ForgetfulFit fetch_ ABSL_GUARDED_BY(mutex_);
  int64_t advised_against_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_PREFIX_FETCH_POLICY_H_
