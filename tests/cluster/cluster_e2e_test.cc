// A whole cluster as real processes on loopback (tests/cluster/local_cluster.h): the prefix one worker
// computed reaches the other through the kvstore; a kvstore killed during a burst loses no request and
// its SSD tier serves again after a restart; a worker killed mid-stream fails that request clearly and
// leaves placement once its lease lapses. Skips, saying why, when a daemon binary is not built.
#include <httplib.h>

#include <atomic>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "bench/cluster/completion_client.h"
#include "gtest/gtest.h"
#include "tests/cluster/local_cluster.h"

namespace strata::cluster_testing {
namespace {

using strata::testing::WaitFor;

constexpr uint32_t kBlockTokens = 16;

#define SKIP_WITHOUT_BINARIES()                                                  \
  do {                                                                           \
    const std::string missing = LocalCluster::MissingBinaries();                 \
    if (!missing.empty()) GTEST_SKIP() << missing << " (make build builds them)"; \
  } while (0)

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A worker metric summed over its label sets (its request series carry model_name).
double Metric(int port, const std::string& name) { return strata::testing::MetricSum(port, name).value_or(-1); }

TEST(ClusterE2E, APrefixComputedOnOneWorkerIsFetchedFromTheKvstoreByTheOther) {
  SKIP_WITHOUT_BINARIES();
  auto cluster = LocalCluster::Start({});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  LocalCluster& c = **cluster;

  const std::vector<int32_t> prefix = Tokens(1, 4 * kBlockTokens);
  const std::vector<int32_t> first = Concat(prefix, Tokens(2, 5));
  const std::vector<int32_t> second = Concat(prefix, Tokens(3, 7));
  const GenerateResult cold = Generate(c.worker_address(1), second, 12, /*disable_prefix_cache=*/true);
  ASSERT_TRUE(cold.ok) << cold.error;
  EXPECT_EQ(cold.prefix.prefill_tokens(), second.size());

  const GenerateResult on_first = Generate(c.worker_address(0), first, 12, false);
  ASSERT_TRUE(on_first.ok) << on_first.error;
  // The worker writes its blocks back asynchronously: the kvstore has them once its gauge says so.
  ASSERT_TRUE(WaitFor([&] { return Metric(c.kvstore_metrics_port(), "strata_kvstore_blocks{tier=\"dram\"}") >= 4; },
                      std::chrono::seconds(20)))
      << "the kvstore never got worker 0's 4 prefix blocks";

  const double prefill_before = Metric(c.worker_metrics_port(1), "strata_worker_prefill_tokens_total");
  const GenerateResult warm = Generate(c.worker_address(1), second, 12, false);
  ASSERT_TRUE(warm.ok) << warm.error;
  EXPECT_EQ(warm.prefix.cached_tokens_kvstore(), 4 * kBlockTokens);
  EXPECT_EQ(warm.prefix.cached_tokens_gpu() + warm.prefix.cached_tokens_host(), 0u);
  EXPECT_EQ(warm.prefix.prefill_tokens(), second.size() - 4 * kBlockTokens);
  EXPECT_EQ(warm.ids, cold.ids) << "ids after a kvstore fetch differ from a cold run";
  EXPECT_EQ(Metric(c.worker_metrics_port(1), "strata_worker_prefill_tokens_total") - prefill_before,
            static_cast<double>(second.size() - 4 * kBlockTokens));
}

TEST(ClusterE2E, AKvstoreKilledDuringABurstLosesNoRequestAndItsSsdBlocksServeAgainAfterARestart) {
  SKIP_WITHOUT_BINARIES();
  ClusterOptions options;
  options.kvstore_args = {"--persist", "write-through"};  // every acknowledged block is on SSD
  auto cluster = LocalCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  LocalCluster& c = **cluster;

  // 8 groups of 4 requests, each group sharing a 3-block prefix; expected ids from cold runs.
  constexpr int kRequests = 32, kGroups = 8;
  constexpr uint32_t kNewTokens = 48;
  auto group_prefix = [&](int group) { return Tokens(100 + static_cast<uint64_t>(group), 3 * kBlockTokens); };
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> expected;
  for (int i = 0; i < kRequests; ++i) {
    prompts.push_back(Concat(group_prefix(i % kGroups), Tokens(200 + static_cast<uint64_t>(i), 9)));
    const GenerateResult cold = Generate(c.worker_address(0), prompts.back(), kNewTokens, true);
    ASSERT_TRUE(cold.ok) << cold.error;
    expected.push_back(cold.ids);
  }

  std::atomic<int> next{0}, done{0};
  std::atomic<bool> killed{false};
  std::vector<GenerateResult> results(kRequests);
  // The second half of the burst starts only once the kvstore is dead, so that the kill always lands
  // mid-burst however fast the machine runs the first half.
  auto sender = [&] {
    for (int i; (i = next.fetch_add(1)) < kRequests;) {
      if (i >= kRequests / 2) WaitFor([&] { return killed.load(); }, std::chrono::seconds(120));
      results[i] = Generate(c.worker_address(i % 2), prompts[i], kNewTokens, false);
      done.fetch_add(1);
    }
  };
  std::vector<std::jthread> threads;  // joined on a failed ASSERT too (std::thread would terminate)
  absl::Cleanup release_second_half = [&] { killed.store(true); };  // runs before the joins
  for (int t = 0; t < 4; ++t) threads.emplace_back(sender);
  // Mid-burst: some requests done and blocks stored, the rest running or still to come.
  ASSERT_TRUE(WaitFor(
      [&] { return done.load() >= 4 && Metric(c.kvstore_metrics_port(), "strata_kvstore_blocks{tier=\"ssd\"}") >= 3; },
      std::chrono::seconds(60)));
  c.KillKvstore();
  killed.store(true);
  const int done_at_kill = done.load();
  for (std::jthread& thread : threads) thread.join();
  EXPECT_LT(done_at_kill, kRequests) << "the burst ended before the kvstore was killed";
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_TRUE(results[i].ok) << "request " << i << ": " << results[i].error;
    EXPECT_EQ(results[i].ids, expected[i]) << "request " << i << " after the kvstore died";
  }

  // Same SSD directory: the blocks written through come back, on the SSD tier. A new worker (empty
  // caches) gets the groups' shared prefixes from there: those the kvstore had stored before it died.
  ASSERT_TRUE(c.RestartKvstore().ok());
  ASSERT_GE(Metric(c.kvstore_metrics_port(), "strata_kvstore_blocks{tier=\"ssd\"}"), 3);
  absl::StatusOr<int> added = c.AddWorker();
  ASSERT_TRUE(added.ok()) << added.status();
  int hit_groups = 0;
  for (int group = 0; group < kGroups; ++group) {
    const std::vector<int32_t> again = Concat(group_prefix(group), Tokens(999, 6));
    const GenerateResult cold = Generate(c.worker_address(*added), again, 16, true);
    ASSERT_TRUE(cold.ok) << cold.error;
    const GenerateResult warm = Generate(c.worker_address(*added), again, 16, false);
    ASSERT_TRUE(warm.ok) << warm.error;
    EXPECT_EQ(warm.ids, cold.ids) << "group " << group;
    EXPECT_EQ(warm.prefix.cached_tokens_gpu() + warm.prefix.cached_tokens_host(), 0u);
    if (warm.prefix.cached_tokens_kvstore() == 3 * kBlockTokens) ++hit_groups;
  }
  EXPECT_GE(hit_groups, 1) << "no group's prefix came back from the restarted kvstore's SSD tier";
  EXPECT_GE(Metric(c.kvstore_metrics_port(), "strata_kvstore_hits_total{tier=\"ssd\"}"), 3 * hit_groups);
}

TEST(ClusterE2E, AWorkerKilledMidStreamFailsThatRequestAndLeavesPlacementAfterItsLease) {
  SKIP_WITHOUT_BINARIES();
  auto cluster = LocalCluster::Start({});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  LocalCluster& c = **cluster;

  // A long stream through the front door; once it is streaming, kill -9 the worker that runs it.
  cluster_bench::CompletionClient::Options client_options;
  client_options.port = c.http_port();
  client_options.timeout_s = 60;
  const cluster_bench::CompletionClient client(client_options);
  cluster_bench::CompletionRequest long_request{"llama3-tiny", Tokens(7, 40), 6000, true, true, false};
  std::atomic<bool> finished{false};
  cluster_bench::CompletionResult result;
  std::jthread stream([&] {  // joined on a failed ASSERT too
    result = client.Complete(long_request);
    finished = true;
  });
  int serving = -1;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (int i = 0; i < c.workers(); ++i) {
          if (Metric(c.worker_metrics_port(i), "strata_worker_running_requests") >= 1 &&
              Metric(c.worker_metrics_port(i), "strata_worker_generated_tokens_total") >= 1) {
            serving = i;
            return true;
          }
        }
        return finished.load();
      },
      std::chrono::seconds(30)));
  ASSERT_GE(serving, 0) << "the stream ended before it could be interrupted: " << result.error;
  c.KillWorker(serving);
  stream.join();
  EXPECT_FALSE(result.ok) << "a stream whose worker died ended as if complete: " << result.text.size() << " bytes";
  EXPECT_FALSE(result.error.empty());
  std::cout << "the interrupted stream's error: " << result.error << "\n";

  const int survivor = 1 - serving;
  ASSERT_TRUE(WaitFor([&] { return c.Holders("worker") == 1; }, std::chrono::seconds(20)))
      << "the scheduler still lists " << c.Holders("worker") << " workers";
  for (int i = 0; i < 4; ++i) {
    const cluster_bench::CompletionResult after =
        client.Complete({"llama3-tiny", Tokens(300 + i, 20), 8, true, true, false});
    ASSERT_TRUE(after.ok) << after.error;
    EXPECT_EQ(after.usage.worker_id, c.worker_id(survivor));
  }
}

}  // namespace
}  // namespace strata::cluster_testing
