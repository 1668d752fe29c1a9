// A daemon's Prometheus text on host:port/metrics (127.0.0.1 unless said), read by tests that wait on what
// it reports.
#ifndef STRATA_TESTS_TESTING_METRICS_SCRAPE_H_
#define STRATA_TESTS_TESTING_METRICS_SCRAPE_H_

#include <optional>
#include <string>

namespace strata::testing {

// The value of the sample `series` (e.g. `strata_kvstore_blocks{tier="dram"}`, labels as rendered);
// nullopt when the endpoint does not answer 200 or has no such sample.
std::optional<double> MetricValue(const std::string& host, int port, const std::string& series);
inline std::optional<double> MetricValue(int port, const std::string& series) {
  return MetricValue("127.0.0.1", port, series);
}

// The sum of every sample of the metric `name` over all its label sets (e.g. the worker's request series,
// labelled by model_name); nullopt when the endpoint does not answer 200 or has no sample of it.
std::optional<double> MetricSum(const std::string& host, int port, const std::string& name);
inline std::optional<double> MetricSum(int port, const std::string& name) { return MetricSum("127.0.0.1", port, name); }

}  // namespace strata::testing

#endif  // STRATA_TESTS_TESTING_METRICS_SCRAPE_H_
