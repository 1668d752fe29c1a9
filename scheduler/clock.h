// Time as the scheduler sees it: the wall clock in the daemon, a simulated one in trace replay and tests.
#ifndef STRATA_SCHEDULER_CLOCK_H_
#define STRATA_SCHEDULER_CLOCK_H_

#include <atomic>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace strata::scheduler {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

// Moves only when told. Thread-safe.
class SimClock final : public Clock {
 public:
  explicit SimClock(absl::Time start = absl::UnixEpoch()) : now_ns_(absl::ToUnixNanos(start)) {}
  absl::Time Now() const override { return absl::FromUnixNanos(now_ns_.load(std::memory_order_relaxed)); }
  void Set(absl::Time now) { now_ns_.store(absl::ToUnixNanos(now), std::memory_order_relaxed); }
  void Advance(absl::Duration by) { Set(Now() + by); }

 private:
  std::atomic<int64_t> now_ns_;
};

}  // namespace strata::scheduler

#endif  // STRATA_SCHEDULER_CLOCK_H_
