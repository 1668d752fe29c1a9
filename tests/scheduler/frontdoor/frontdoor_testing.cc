#include "tests/scheduler/frontdoor/frontdoor_testing.h"

#include <sstream>

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

}  // namespace strata::frontdoor::testing
