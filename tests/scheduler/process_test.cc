// The real strata-scheduler binary as a process: it serves health and /metrics, drains on SIGTERM and
// exits 0; bad flags exit 1 with one line; `replay --json` prints one JSON object.
#include <httplib.h>
#include <signal.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
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

// The flags of `serve` from a config file and STRATA_* variables (the environment over the file, the
// command line over both), with the ports it bound in --port-file.
TEST(SchedulerProcess, ServeTakesFlagsFromTheEnvironmentAndAConfigFile) {
  const std::string dir = ::testing::TempDir() + "/scheduler_flags_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  {
    std::ofstream config(dir + "/scheduler.toml");
    config << "# strata-scheduler serve --config\ngrpc-address = \"127.0.0.1:0\"\nmetrics-port = 0\n"
           << "policy = \"no-such-policy\"\nport-file = \"" << dir << "/ports\"\nmax-request-bytes = \"1MiB\"\n";
  }
  ChildProcess child({"/usr/bin/env", "STRATA_POLICY=least-loaded", "STRATA_METRICS_HOST=127.0.0.1",
                      STRATA_SCHEDULER_PATH, "serve", "--config", dir + "/scheduler.toml", "--lease-ms", "7000"});
  const std::string log = child.ReadStderrUntil("event=scheduler_started", std::chrono::seconds(20));
  EXPECT_NE(log.find("policy=least-loaded lease_ms=7000"), std::string::npos) << log;
  std::string ports;
  ASSERT_TRUE(strata::testing::WaitFor(
      [&] {
        std::ifstream ports_file(dir + "/ports");
        ports.assign(std::istreambuf_iterator<char>(ports_file), std::istreambuf_iterator<char>());
        return !ports.empty();
      },
      std::chrono::seconds(10)))
      << "no port file";
  EXPECT_EQ(FieldAfter(ports, "grpc_port="), FieldAfter(log, "grpc_port=")) << ports;
  EXPECT_EQ(FieldAfter(ports, "http_port="), -1) << ports;  // no front door without --model-dir
  child.Signal(SIGTERM);
  EXPECT_EQ(child.Wait(std::chrono::seconds(15)), 0) << child.err();

  std::ofstream(dir + "/typo.yaml") << "grpc-adress: 127.0.0.1:0\n";
  ChildProcess typo({STRATA_SCHEDULER_PATH, "serve", "--config", dir + "/typo.yaml"});
  EXPECT_EQ(typo.Wait(std::chrono::seconds(15)), 2);
  EXPECT_NE(typo.err().find("typo.yaml:1: unknown key 'grpc-adress'"), std::string::npos) << typo.err();
  std::filesystem::remove_all(dir);
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
