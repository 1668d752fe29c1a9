#include "tests/testing/metrics_scrape.h"

#include <httplib.h>

#include <cstdlib>
#include <sstream>

namespace strata::testing {

namespace {
std::optional<std::string> Scrape(const std::string& host, int port) {
  httplib::Client http(host, port);
  http.set_connection_timeout(2);
  http.set_read_timeout(5);
  auto response = http.Get("/metrics");
  if (!response || response->status != 200) return std::nullopt;
  return response->body;
}
}  // namespace

std::optional<double> MetricValue(const std::string& host, int port, const std::string& series) {
  const std::optional<std::string> body = Scrape(host, port);
  if (!body) return std::nullopt;
  std::istringstream lines(*body);
  for (std::string line; std::getline(lines, line);) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 && line[series.size()] == ' ') {
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
    }
  }
  return std::nullopt;
}

std::optional<double> MetricSum(const std::string& host, int port, const std::string& name) {
  const std::optional<std::string> body = Scrape(host, port);
  if (!body) return std::nullopt;
  std::optional<double> sum;
  std::istringstream lines(*body);
  for (std::string line; std::getline(lines, line);) {
    if (line.size() <= name.size() || line.compare(0, name.size(), name) != 0) continue;
    size_t value_at = name.size();
    if (line[value_at] == '{') {
      value_at = line.find("} ", value_at);
      if (value_at == std::string::npos) continue;
      ++value_at;
    } else if (line[value_at] != ' ') {
      continue;  // another metric whose name starts with this one
    }
    sum = sum.value_or(0) + std::strtod(line.c_str() + value_at + 1, nullptr);
  }
  return sum;
}

}  // namespace strata::testing
