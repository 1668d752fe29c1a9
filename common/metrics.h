// Prometheus metrics: counters, gauges and histograms in a registry that renders the text exposition
// format (version 0.0.4), which daemons serve on `/metrics` (common/daemon.h).
//
// Metrics are created once at start-up and updated lock-free on hot paths (relaxed atomics); rendering
// takes a consistent-enough snapshot, as every Prometheus client does. A registry owns its metrics and
// hands out references that live as long as it. Thread-safe.
#ifndef STRATA_COMMON_METRICS_H_
#define STRATA_COMMON_METRICS_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace strata {

// {{"tier", "dram"}, {"op", "get"}}
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Increment(double amount = 1.0);  // REQUIRES: amount >= 0
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double amount);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  // `upper_bounds`: strictly increasing finite bucket bounds; +Inf is implicit.
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value);
  uint64_t Count() const { return count_.load(std::memory_order_relaxed); }
  double Sum() const { return sum_.load(std::memory_order_relaxed); }
  // Cumulative count of observations <= upper_bounds()[i].
  uint64_t CumulativeCount(size_t bucket) const;
  const std::vector<double>& upper_bounds() const { return upper_bounds_; }

 private:
  std::vector<double> upper_bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // per bucket, not cumulative; last is +Inf
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

// Bucket bounds for latencies in seconds: 10 µs … ~10 s, three per decade.
std::vector<double> LatencyBucketsSeconds();

class MetricsRegistry {
 public:
  // Each call adds one time series. `name` follows Prometheus naming (`strata_kvstore_hits_total`);
  // series of one name must share `help` and type and differ in labels. A second series with the same
  // name and labels, or a clash of type, is a bug (STRATA_CHECK).
  Counter& AddCounter(const std::string& name, const std::string& help, MetricLabels labels = {});
  Gauge& AddGauge(const std::string& name, const std::string& help, MetricLabels labels = {});
  Histogram& AddHistogram(const std::string& name, const std::string& help, std::vector<double> upper_bounds,
                          MetricLabels labels = {});
  // A gauge read at render time (occupancy, queue length). `read` must be thread-safe and cheap.
  void AddGaugeCallback(const std::string& name, const std::string& help, MetricLabels labels,
                        std::function<double()> read);

  // Removes the series of `name` with exactly `labels` (a holder's, once it is gone, so that series do not
  // pile up with every rollout); false when there is none. A family left without series is no longer
  // rendered. REQUIRES: nobody uses the series any more (its Counter, Gauge or Histogram reference
  // dangles from here); a callback's `read` is destroyed under the registry's lock, so it must not be
  // running elsewhere.
  bool RemoveSeries(const std::string& name, const MetricLabels& labels);

  // The whole registry in the text exposition format.
  std::string RenderText() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Series {
    MetricLabels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
    std::function<double()> read;
  };
  struct Family {
    std::string name;
    std::string help;
    Type type;
    std::vector<Series> series;
  };
  Series& AddSeries(const std::string& name, const std::string& help, Type type, MetricLabels labels)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  mutable absl::Mutex mutex_;
  std::vector<std::unique_ptr<Family>> families_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace strata

#endif  // STRATA_COMMON_METRICS_H_
