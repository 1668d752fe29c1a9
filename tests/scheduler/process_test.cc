// The real strata-scheduler binary as a process: it serves health and /metrics, drains on SIGTERM and
// exits 0; bad flags exit 1 with one line; `replay --json` prints one JSON object.
#include <httplib.h>
#include <signal.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/scheduler/grpc_testing.h"
#include "tests/testing/child_process.h"

namespace {

using strata::testing::ChildProcess;

int FieldAfter(const std::string& text, const std::string& key) {
  const size_t at = text.find(key);
  if (at == std::string::npos) return -1;
  return std::atoi(text.c_str() + at + key.size());
}

TEST(SchedulerProcess, ServesHealthAndMetricsAndDrainsOnSigterm) {
  ChildProcess child({STRATA_SCHEDULER_PATH, "serve", "--grpc-address", "127.0.0.1:0", "--metrics-host", "127.0.0.1",
               "--metrics-port", "0"});
  const std::string log = child.ReadStderrUntil("event=scheduler_started", std::chrono::seconds(20));
  const int grpc_port = FieldAfter(log, "grpc_port=");
  const int metrics_port = FieldAfter(log, "metrics_port=");
  ASSERT_GT(grpc_port, 0) << log;
  ASSERT_GT(metrics_port, 0) << log;

  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_port), grpc::InsecureChannelCredentials());
  EXPECT_EQ(strata::scheduler::testing::HealthStatus(channel), 1);
  httplib::Client http("127.0.0.1", metrics_port);
  auto health = http.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("strata_scheduler_index_blocks 0"), std::string::npos);

  child.Signal(SIGTERM);
  EXPECT_EQ(child.Wait(std::chrono::seconds(15)), 0) << child.err();
  EXPECT_NE(child.err().find("event=shutdown_signal signal=15"), std::string::npos) << child.err();
  EXPECT_NE(child.err().find("event=scheduler_stopped"), std::string::npos) << child.err();
}

TEST(SchedulerProcess, BadFlagsExitOneWithOneLine) {
  ChildProcess child({STRATA_SCHEDULER_PATH, "serve", "--policy", "random"});
  EXPECT_EQ(child.Wait(std::chrono::seconds(15)), 1);
  EXPECT_NE(child.err().find("unknown policy 'random'"), std::string::npos) << child.err();
  ChildProcess missing({STRATA_SCHEDULER_PATH, "replay", "--trace", "/nonexistent/trace.jsonl"});
  EXPECT_EQ(missing.Wait(std::chrono::seconds(15)), 1);
  EXPECT_NE(missing.err().find("/nonexistent/trace.jsonl: cannot open"), std::string::npos) << missing.err();
}

TEST(SchedulerProcess, ReplayJsonIsOneObjectWithTheTablesFields) {
  ChildProcess child({STRATA_SCHEDULER_PATH, "replay", "--trace",
               std::string(STRATA_TEST_DATA_DIR) + "/traces/mooncake_synthetic_trace.jsonl", "--max-requests",
               "300", "--json"});
  ASSERT_EQ(child.Wait(std::chrono::seconds(30)), 0) << child.err();
  const nlohmann::json json = nlohmann::json::parse(child.out(), nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << child.out();
  for (const char* policy : {"round-robin", "least-loaded", "cache-aware"}) {
    ASSERT_TRUE(json["policies"].contains(policy)) << policy;
    EXPECT_EQ(json["policies"][policy]["requests"], 300);
    EXPECT_TRUE(json["policies"][policy].contains("ttft_p90_s"));
    EXPECT_TRUE(json["policies"][policy].contains("hit_rate_kvstore_dram"));
  }
}

}  // namespace
