// Two scheduler replicas (each with its front door), every worker and the kvstore registered with both:
// killing one during a burst loses only the requests it was streaming; the other serves every request sent
// after, with the same outputs, and its index (fed by the holders, not by the dead replica) still places
// prefix hits.
#include <atomic>
#include <iostream>
#include <mutex>
#include <thread>

#include "bench/cluster/completion_client.h"
#include "gtest/gtest.h"
#include "tests/cluster/local_cluster.h"

namespace strata::cluster_testing {
namespace {

using strata::testing::WaitFor;

constexpr uint32_t kBlockTokens = 16;

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

cluster_bench::CompletionClient ClientOf(const LocalCluster& c, int replica) {
  cluster_bench::CompletionClient::Options options;
  options.host = c.scheduler_host(replica);
  options.port = c.http_port(replica);
  options.timeout_s = 60;
  return cluster_bench::CompletionClient(options);
}

TEST(SchedulerReplicas, KillingOneDuringABurstLosesOnlyItsInFlightRequestsAndTheOtherServesEveryNewOne) {
  const std::string missing = LocalCluster::MissingBinaries();
  if (!missing.empty()) GTEST_SKIP() << missing << " (make build builds them)";
  ClusterOptions options;
  options.schedulers = 2;
  auto cluster = LocalCluster::Start(options);  // waits until both replicas list both workers and the kvstore
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  LocalCluster& c = **cluster;
  const cluster_bench::CompletionClient replica[2] = {ClientOf(c, 0), ClientOf(c, 1)};

  constexpr int kRequests = 24, kGroups = 4;
  constexpr uint32_t kNewTokens = 24;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> expected;
  for (int i = 0; i < kRequests; ++i) {
    prompts.push_back(Concat(Tokens(500 + static_cast<uint64_t>(i % kGroups), 3 * kBlockTokens),
                             Tokens(600 + static_cast<uint64_t>(i), 5)));
    const cluster_bench::CompletionResult cold =
        replica[1].Complete({"llama3-tiny", prompts.back(), kNewTokens, true, true, /*disable_prefix_cache=*/true});
    ASSERT_TRUE(cold.ok) << cold.error;
    expected.push_back(cold.text);
  }

  // Requests alternate between the replicas until replica 0 dies, then go to replica 1 (a client failing
  // over to the next front door). Choosing the replica and the kill share a lock, so a request sent to
  // replica 0 was in flight there when it died or had finished before.
  std::mutex mutex;
  bool killed = false;
  int in_flight[2] = {0, 0};
  int in_flight_on_killed = 0;
  struct Outcome {
    int replica = -1;
    cluster_bench::CompletionResult result;
  };
  std::vector<Outcome> outcomes(kRequests);
  std::atomic<int> next{0}, done{0};
  auto sender = [&] {
    for (int i; (i = next.fetch_add(1)) < kRequests;) {
      int chosen;
      {
        std::lock_guard lock(mutex);
        chosen = killed ? 1 : i % 2;
        ++in_flight[chosen];
      }
      outcomes[i].replica = chosen;
      outcomes[i].result = replica[chosen].Complete({"llama3-tiny", prompts[i], kNewTokens, true, true, false});
      {
        std::lock_guard lock(mutex);
        --in_flight[chosen];
      }
      done.fetch_add(1);
    }
  };
  std::vector<std::jthread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(sender);
  ASSERT_TRUE(WaitFor(
      [&] {
        std::lock_guard lock(mutex);
        return done.load() >= 6 && in_flight[0] >= 1;
      },
      std::chrono::seconds(60)))
      << "replica 0 never had a request in flight after 6 were done";
  {
    std::lock_guard lock(mutex);
    c.KillScheduler(0);
    killed = true;
    in_flight_on_killed = in_flight[0];
  }
  const int done_at_kill = done.load();
  threads.clear();  // joins
  ASSERT_LT(done_at_kill, kRequests) << "the burst ended before the kill";

  int lost = 0, after_kill_on_1 = 0;
  for (int i = 0; i < kRequests; ++i) {
    const Outcome& o = outcomes[i];
    if (!o.result.ok) {
      ++lost;
      EXPECT_EQ(o.replica, 0) << "request " << i << " failed on the surviving replica: " << o.result.error;
      continue;
    }
    EXPECT_EQ(o.result.text, expected[i]) << "request " << i << " on replica " << o.replica;
  }
  for (int i = done_at_kill; i < kRequests; ++i) after_kill_on_1 += outcomes[i].replica == 1 ? 1 : 0;
  EXPECT_LE(lost, in_flight_on_killed) << "requests were lost beyond those replica 0 was streaming";
  EXPECT_GT(after_kill_on_1, 0);
  std::cout << "killed replica 0 with " << in_flight_on_killed << " requests in flight on it: " << lost << " of "
            << kRequests << " lost\n";

  // Replica 1's registry and index come from the holders themselves: both workers are still placed, and
  // a prompt sharing a group's prefix is routed to reuse it.
  EXPECT_EQ(c.Holders("worker", 1), 2);
  EXPECT_EQ(c.Holders("kvstore", 1), 1);
  const cluster_bench::CompletionResult again =
      replica[1].Complete({"llama3-tiny", Concat(Tokens(500, 3 * kBlockTokens), Tokens(999, 4)), 8, true, true, false});
  ASSERT_TRUE(again.ok) << again.error;
  EXPECT_GE(again.usage.cached_tokens, 3 * kBlockTokens) << "replica 1's index did not place the prefix";
}

}  // namespace
}  // namespace strata::cluster_testing
