#include "tests/scheduler/frontdoor/frontdoor_testing.h"

#include <httplib.h>

#include <cstdlib>
#include <sstream>

#include "nlohmann/json.hpp"
#include "tests/testing/child_process.h"

namespace strata::frontdoor::testing {

scheduler::Options LoopbackSchedulerOptions() {
  scheduler::Options options;
  options.grpc_address = "127.0.0.1:0";
  options.metrics_host = "127.0.0.1";
  options.metrics_port = 0;
  options.lease = absl::Seconds(120);
  options.heartbeat_interval = absl::Seconds(30);
  return options;
}

std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  std::istringstream lines(body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("data: ", 0) == 0) out.push_back(line.substr(6));
  }
  return out;
}

int FieldAfter(const std::string& text, const std::string& key) {
  const size_t at = text.find(key);
  return at == std::string::npos ? -1 : std::atoi(text.c_str() + at + key.size());
}

bool WaitForWorkers(int http_port, int workers, std::chrono::milliseconds timeout) {
  httplib::Client http("127.0.0.1", http_port);
  return strata::testing::WaitFor(
      [&] {
        httplib::Result models = http.Get("/v1/models");
        if (!models || models->status != 200) return false;
        const nlohmann::json listed = nlohmann::json::parse(models->body, nullptr, /*allow_exceptions=*/false);
        return listed.contains("data") && !listed["data"].empty() && listed["data"][0].value("workers", -1) == workers;
      },
      timeout);
}

}  // namespace strata::frontdoor::testing
