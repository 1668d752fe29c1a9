#include "tests/testing/metrics_scrape.h"

#include <httplib.h>

#include <cstdlib>
#include <sstream>

namespace strata::testing {

std::optional<double> MetricValue(const std::string& host, int port, const std::string& series) {
  httplib::Client http(host, port);
  http.set_connection_timeout(2);
  http.set_read_timeout(5);
  auto response = http.Get("/metrics");
  if (!response || response->status != 200) return std::nullopt;
  std::istringstream lines(response->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 && line[series.size()] == ' ') {
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
    }
  }
  return std::nullopt;
}

}  // namespace strata::testing
