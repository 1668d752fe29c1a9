// What the front door lets one request and one caller do: the size of a request (body bytes, prompt
// tokens, completion tokens) and a caller's pace (a token bucket of requests per second) and
// concurrency (requests open at once, streams included until they end). Refusals are OpenAI-shaped
// errors (request.h): 413 for the body, 400 for tokens, 429 with a Retry-After for pace and concurrency.
#ifndef STRATA_SCHEDULER_FRONTDOOR_LIMITS_H_
#define STRATA_SCHEDULER_FRONTDOOR_LIMITS_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "scheduler/frontdoor/json_shape.h"

namespace strata::frontdoor {

// Per request; 0 means no limit of the server's own (the model's context still bounds the tokens).
struct RequestLimits {
  uint64_t max_request_bytes = 0;      // request body, refused (413) before it is parsed
  int64_t max_prompt_tokens = 0;       // after tokenization / the chat template (400)
  int64_t max_completion_tokens = 0;   // a larger max_tokens is refused (400); an absent one is capped
  JsonShapeLimits json;                // nesting depth and elements, checked as the body arrives (400)
};

// Per caller (API key); 0 means unlimited.
struct CallerLimits {
  double rate_rps = 0;    // sustained requests per second
  double burst = 0;       // bucket size; 0 with a rate: max(1, rate_rps)
  int64_t concurrency = 0;
};

class CallerLimiter;

// A caller's admitted request: holds its concurrency slot until destroyed or Release()d. Move-only.
class Admission {
 public:
  Admission() = default;
  Admission(Admission&& other) noexcept { *this = std::move(other); }
  Admission& operator=(Admission&& other) noexcept;
  ~Admission() { Release(); }
  void Release();

 private:
  friend class CallerLimiter;
  CallerLimiter* limiter_ = nullptr;
  int caller_ = -1;
};

// Thread-safe. Callers are small integers (ApiKeys' index); state is created on a caller's first request.
class CallerLimiter {
 public:
  // Admits a request of `caller` under `limits` at `now`, or refuses it: ResourceExhausted, HTTP 429,
  // code rate_limit_exceeded, with RetryAfterOf(status) set (seconds until a token is due; 1 for a full
  // concurrency limit). A refused request takes neither a token nor a slot.
  absl::StatusOr<Admission> Admit(int caller, const CallerLimits& limits, absl::Time now = absl::Now());
  // Requests of `caller` open now (tests, metrics).
  int64_t open(int caller);

 private:
  friend class Admission;
  struct State {
    double tokens = 0;
    absl::Time refilled = absl::InfinitePast();
    int64_t open = 0;
  };
  void Release(int caller);

  absl::Mutex mutex_;
  absl::flat_hash_map<int, State> states_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace strata::frontdoor

#endif  // STRATA_SCHEDULER_FRONTDOOR_LIMITS_H_
