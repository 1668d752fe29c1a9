#include "common/metrics.h"

#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace strata {
namespace {

void AtomicAdd(std::atomic<double>& target, double amount) {
  double current = target.load(std::memory_order_relaxed);
  while (!target.compare_exchange_weak(current, current + amount, std::memory_order_relaxed)) {
  }
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[32];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  STRATA_CHECK(ec == std::errc());
  return std::string(buffer, end);
}

// Label values escape backslash, double quote and newline; help text escapes backslash and newline.
std::string Escape(std::string_view text, bool quotes) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quotes && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

// `{key="value",...}` with an optional trailing `le` label; empty when there are no labels.
std::string Labels(const MetricLabels& labels, std::string_view le = {}) {
  if (labels.empty() && le.empty()) return "";
  std::string out = "{";
  for (const auto& [key, value] : labels) {
    absl::StrAppend(&out, out.size() > 1 ? "," : "", key, "=\"", Escape(value, /*quotes=*/true), "\"");
  }
  if (!le.empty()) absl::StrAppend(&out, out.size() > 1 ? "," : "", "le=\"", absl::string_view(le.data(), le.size()), "\"");
  out += '}';
  return out;
}

bool ValidName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

}  // namespace

void Counter::Increment(double amount) {
  STRATA_CHECK(amount >= 0);
  AtomicAdd(value_, amount);
}

void Gauge::Add(double amount) { AtomicAdd(value_, amount); }

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)), buckets_(new std::atomic<uint64_t>[upper_bounds_.size() + 1]) {
  for (size_t i = 0; i < upper_bounds_.size(); ++i) {
    STRATA_CHECK(std::isfinite(upper_bounds_[i]));
    STRATA_CHECK(i == 0 || upper_bounds_[i] > upper_bounds_[i - 1]);
  }
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  size_t bucket = 0;
  while (bucket < upper_bounds_.size() && value > upper_bounds_[bucket]) ++bucket;
  buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, value);
}

uint64_t Histogram::CumulativeCount(size_t bucket) const {
  uint64_t total = 0;
  for (size_t i = 0; i <= bucket && i <= upper_bounds_.size(); ++i) total += buckets_[i].load(std::memory_order_relaxed);
  return total;
}

std::vector<double> LatencyBucketsSeconds() {
  std::vector<double> bounds;
  for (double decade = 1e-5; decade < 10; decade *= 10) {
    bounds.push_back(decade);
    bounds.push_back(2 * decade);
    bounds.push_back(5 * decade);
  }
  bounds.push_back(10);
  return bounds;
}

MetricsRegistry::Series& MetricsRegistry::AddSeries(const std::string& name, const std::string& help, Type type,
                                                    MetricLabels labels) {
  STRATA_CHECK(ValidName(name));
  for (const auto& [key, value] : labels) STRATA_CHECK(ValidName(key) && key != "le");
  Family* family = nullptr;
  for (auto& existing : families_) {
    if (existing->name == name) family = existing.get();
  }
  if (family == nullptr) {
    families_.push_back(std::make_unique<Family>(Family{name, help, type, {}}));
    family = families_.back().get();
  }
  STRATA_CHECK(family->type == type);
  for (const Series& series : family->series) STRATA_CHECK(series.labels != labels);
  family->series.push_back(Series{std::move(labels), nullptr, nullptr, nullptr, nullptr});
  return family->series.back();
}

Counter& MetricsRegistry::AddCounter(const std::string& name, const std::string& help, MetricLabels labels) {
  absl::MutexLock lock(&mutex_);
  Series& series = AddSeries(name, help, Type::kCounter, std::move(labels));
  series.counter = std::make_unique<Counter>();
  return *series.counter;
}

Gauge& MetricsRegistry::AddGauge(const std::string& name, const std::string& help, MetricLabels labels) {
  absl::MutexLock lock(&mutex_);
  Series& series = AddSeries(name, help, Type::kGauge, std::move(labels));
  series.gauge = std::make_unique<Gauge>();
  return *series.gauge;
}

Histogram& MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                         std::vector<double> upper_bounds, MetricLabels labels) {
  absl::MutexLock lock(&mutex_);
  Series& series = AddSeries(name, help, Type::kHistogram, std::move(labels));
  series.histogram = std::make_unique<Histogram>(std::move(upper_bounds));
  return *series.histogram;
}

void MetricsRegistry::AddGaugeCallback(const std::string& name, const std::string& help, MetricLabels labels,
                                       std::function<double()> read) {
  absl::MutexLock lock(&mutex_);
  Series& series = AddSeries(name, help, Type::kGauge, std::move(labels));
  series.read = std::move(read);
}

bool MetricsRegistry::RemoveSeries(const std::string& name, const MetricLabels& labels) {
  absl::MutexLock lock(&mutex_);
  for (auto family = families_.begin(); family != families_.end(); ++family) {
    if ((*family)->name != name) continue;
    std::vector<Series>& series = (*family)->series;
    const bool removed = std::erase_if(series, [&](const Series& s) { return s.labels == labels; }) > 0;
    if (series.empty()) families_.erase(family);
    return removed;
  }
  return false;
}

std::string MetricsRegistry::RenderText() const {
  static constexpr const char* kTypeNames[] = {"counter", "gauge", "histogram"};
  absl::MutexLock lock(&mutex_);
  std::string out;
  for (const auto& family : families_) {
    absl::StrAppend(&out, "# HELP ", family->name, " ", Escape(family->help, /*quotes=*/false), "\n");
    absl::StrAppend(&out, "# TYPE ", family->name, " ", kTypeNames[static_cast<int>(family->type)], "\n");
    for (const Series& series : family->series) {
      if (family->type != Type::kHistogram) {
        const double value = series.counter ? series.counter->Value()
                             : series.gauge ? series.gauge->Value()
                                            : series.read();
        absl::StrAppend(&out, family->name, Labels(series.labels), " ", FormatValue(value), "\n");
        continue;
      }
      // One pass over the buckets; the +Inf bucket and _count are the same number, as the format requires.
      const Histogram& histogram = *series.histogram;
      const double sum = histogram.Sum();
      const size_t bounds = histogram.upper_bounds().size();
      for (size_t i = 0; i < bounds; ++i) {
        absl::StrAppend(&out, family->name, "_bucket",
                        Labels(series.labels, FormatValue(histogram.upper_bounds()[i])), " ",
                        histogram.CumulativeCount(i), "\n");
      }
      const uint64_t count = histogram.CumulativeCount(bounds);
      absl::StrAppend(&out, family->name, "_bucket", Labels(series.labels, "+Inf"), " ", count, "\n");
      absl::StrAppend(&out, family->name, "_sum", Labels(series.labels), " ", FormatValue(sum), "\n");
      absl::StrAppend(&out, family->name, "_count", Labels(series.labels), " ", count, "\n");
    }
  }
  return out;
}

}  // namespace strata
