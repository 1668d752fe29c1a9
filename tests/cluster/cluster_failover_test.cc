// Failures are noticed at once, not after a lease (a 10 s lease here, so that waiting it out cannot pass
// for the behaviour under test): a worker killed with SIGKILL leaves placement within a second, found by
// the front door's refused connection with no request needed; a kvstore killed and restarted on its address
// replaces its dead registration and serves hits again within a second of serving.
#include <chrono>
#include <iostream>

#include "bench/cluster/completion_client.h"
#include "gtest/gtest.h"
#include "tests/cluster/local_cluster.h"

namespace strata::cluster_testing {
namespace {

using strata::testing::WaitFor;
using Clock = std::chrono::steady_clock;

constexpr int kLongLeaseMs = 10000;
constexpr std::chrono::milliseconds kBound{1000};  // the bound under test; a lease-based path takes 10 s

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

#define SKIP_WITHOUT_BINARIES()                                                   \
  do {                                                                            \
    const std::string missing = LocalCluster::MissingBinaries();                  \
    if (!missing.empty()) GTEST_SKIP() << missing << " (make build builds them)"; \
  } while (0)

TEST(ClusterFailover, AKilledWorkerLeavesPlacementWithinASecondAndRequestsGoToTheOthers) {
  SKIP_WITHOUT_BINARIES();
  ClusterOptions options;
  options.lease_ms = kLongLeaseMs;
  auto cluster = LocalCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  LocalCluster& c = **cluster;
  cluster_bench::CompletionClient::Options client_options;
  client_options.port = c.http_port();
  client_options.timeout_s = 60;
  const cluster_bench::CompletionClient client(client_options);
  // The front door knows both workers (and holds a channel to each) once it has served a request.
  ASSERT_TRUE(client.Complete({"llama3-tiny", Tokens(1, 20), 2, true, true, false}).ok);
  ASSERT_EQ(MetricValue(c.scheduler_metrics_port(), "strata_scheduler_unreachable_holders"), 0.0);

  const Clock::time_point killed = Clock::now();
  c.KillWorker(0);
  ASSERT_TRUE(
      WaitFor([&] { return MetricValue(c.scheduler_metrics_port(), "strata_scheduler_unreachable_holders") == 1.0; },
              std::chrono::milliseconds(3 * kLongLeaseMs)))
      << "the killed worker was never marked unreachable";
  const double marked_s = Seconds(Clock::now() - killed);
  std::cout << "killed worker out of placement after " << marked_s * 1e3 << " ms (lease " << kLongLeaseMs << " ms)\n";
  EXPECT_LT(marked_s, Seconds(kBound));
  EXPECT_EQ(c.Holders("worker"), 2) << "the test's lease lapsed: it no longer tells marking from expiry";
  for (int i = 0; i < 4; ++i) {
    const cluster_bench::CompletionResult after =
        client.Complete({"llama3-tiny", Tokens(300 + i, 20), 4, true, true, false});
    ASSERT_TRUE(after.ok) << after.error;
    EXPECT_EQ(after.usage.worker_id, c.worker_id(1));
  }
}

TEST(ClusterFailover, ARestartedKvstoreReplacesItsRegistrationAndServesHitsWithinASecond) {
  SKIP_WITHOUT_BINARIES();
  ClusterOptions options;
  options.lease_ms = kLongLeaseMs;
  options.kvstore_args = {"--persist", "write-through"};  // what it stored survives the kill on its SSD
  auto cluster = LocalCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  LocalCluster& c = **cluster;

  // Worker 0 computes (and writes back) 3-block prefixes that worker 1 never sees: each is a hit for worker 1
  // only through the kvstore, and each probe below uses a fresh one (a miss would be cached locally).
  constexpr int kPrefixes = 40;
  constexpr uint32_t kPrefixTokens = 48;
  auto prefix = [](int i) { return Tokens(500 + static_cast<uint64_t>(i), kPrefixTokens); };
  for (int i = 0; i < kPrefixes; ++i) {
    std::vector<int32_t> prompt = prefix(i);
    prompt.push_back(20);
    ASSERT_TRUE(Generate(c.worker_address(0), prompt, 1, false).ok);
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        return MetricValue(c.kvstore_metrics_port(), "strata_kvstore_blocks{tier=\"ssd\"}").value_or(0) >=
               3 * kPrefixes;
      },
      std::chrono::seconds(30)));

  c.KillKvstore();
  Clock::time_point serving;
  ASSERT_TRUE(c.RestartKvstore(&serving).ok());
  const double registered_s = Seconds(Clock::now() - serving);
  std::cout << "restarted kvstore registered " << registered_s * 1e3 << " ms after serving\n";
  EXPECT_LT(registered_s, Seconds(kBound));
  EXPECT_EQ(c.Holders("kvstore"), 1);

  // Probes, a fresh prefix each, every 25 ms or so until worker 1 gets one from the kvstore (or 3 s pass).
  double hit_s = -1;
  int probes = 0;
  WaitFor(
      [&] {
        if (probes == kPrefixes) return true;
        std::vector<int32_t> prompt = prefix(probes++);
        prompt.push_back(21);
        const GenerateResult probe = Generate(c.worker_address(1), prompt, 1, false);
        EXPECT_TRUE(probe.ok) << probe.error;
        if (probe.prefix.cached_tokens_kvstore() == kPrefixTokens) hit_s = Seconds(Clock::now() - serving);
        return hit_s >= 0;
      },
      3 * kBound);
  std::cout << probes << " probe(s)\n";
  ASSERT_GE(hit_s, 0) << "no probe hit the restarted kvstore";
  std::cout << "first kvstore hit " << hit_s * 1e3 << " ms after the restarted kvstore served\n";
  EXPECT_LT(hit_s, Seconds(kBound));
}

}  // namespace
}  // namespace strata::cluster_testing
