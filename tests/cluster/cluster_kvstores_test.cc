// Several kvstores (real processes): blocks spread over them by rendezvous hashing (common/rendezvous.h).
// A third kvstore added to a running two-kvstore cluster leaves most cached blocks where workers look for
// them, and workers given the kvstores in different orders share hits.
#include <cstdio>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/cluster/local_cluster.h"

namespace strata::cluster_testing {
namespace {

using strata::testing::WaitFor;

constexpr uint32_t kBlockTokens = 16;
constexpr int kPrompts = 24;
constexpr int kPrefixBlocks = 16;  // 384 blocks: the hit fraction is within 2.6 sd of 2/3 at 60%

// A sample of kvstore `k`'s /metrics; -1 when unreadable.
double Metric(const LocalCluster& c, int k, const std::string& series) {
  return c.KvstoreMetric(k, series).value_or(-1);
}

// Each kvstore's block lookups and hits (a get asks each block of it once: DRAM, then SSD).
struct GetCounts {
  double lookups = 0, hits = 0;
};
GetCounts Counts(const LocalCluster& c) {
  GetCounts out;
  for (int i = 0; i < c.kvstores(); ++i) {
    const double dram_hits = Metric(c, i, "strata_kvstore_hits_total{tier=\"dram\"}");
    const double dram_misses = Metric(c, i, "strata_kvstore_misses_total{tier=\"dram\"}");
    const double ssd_hits = Metric(c, i, "strata_kvstore_hits_total{tier=\"ssd\"}");
    out.lookups += dram_hits + dram_misses;
    out.hits += dram_hits + ssd_hits;
  }
  return out;
}

double StoredBlocks(const LocalCluster& c) {
  double blocks = 0;
  for (int i = 0; i < c.kvstores(); ++i) {
    blocks += Metric(c, i, "strata_kvstore_blocks{tier=\"dram\"}") +
              Metric(c, i, "strata_kvstore_blocks{tier=\"ssd\"}");
  }
  return blocks;
}

std::vector<int32_t> Prompt(int i) {
  std::vector<int32_t> prompt = Tokens(100 + i, kPrefixBlocks * kBlockTokens);
  const std::vector<int32_t> tail = Tokens(500 + i, 5);  // a partial block: every full block is loadable
  prompt.insert(prompt.end(), tail.begin(), tail.end());
  return prompt;
}

TEST(ClusterKvstores, AThirdKvstoreKeepsMostCachedBlocksAndWorkersInAnyFlagOrderShareHits) {
  const std::string missing = LocalCluster::MissingBinaries();
  if (!missing.empty()) GTEST_SKIP() << missing << " (make build builds them)";
  ClusterOptions options;
  options.kvstores = 2;
  options.workers = 1;  // given kvstores 0, 1
  auto cluster = LocalCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  LocalCluster& c = **cluster;

  // Worker 0 computes every prompt and writes its blocks to the two kvstores.
  for (int i = 0; i < kPrompts; ++i) {
    const GenerateResult result = Generate(c.worker_address(0), Prompt(i), 1, false);
    ASSERT_TRUE(result.ok) << result.error;
  }
  const double written = kPrompts * kPrefixBlocks;
  ASSERT_TRUE(WaitFor([&] { return StoredBlocks(c) >= written; }, std::chrono::seconds(30)))
      << "the kvstores hold " << StoredBlocks(c) << " of the " << written << " blocks worker 0 wrote";
  for (int i = 0; i < 2; ++i) {
    EXPECT_GT(Metric(c, i, "strata_kvstore_blocks{tier=\"dram\"}"), written / 4)
        << "kvstore " << i << " got too few of the blocks: not spread";
  }

  // A third kvstore; a new worker (nothing cached of its own) given all three, in another order.
  auto added = c.AddKvstore();
  ASSERT_TRUE(added.ok()) << added.status();
  auto worker = c.AddWorker({2, 1, 0});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const GetCounts before = Counts(c);
  for (int i = 0; i < kPrompts; ++i) {
    const GenerateResult result = Generate(c.worker_address(*worker), Prompt(i), 1, false);
    ASSERT_TRUE(result.ok) << result.error;
  }
  const GetCounts after = Counts(c);
  const double lookups = after.lookups - before.lookups, hits = after.hits - before.hits;
  ASSERT_EQ(lookups, written) << "the worker asked for each prefix block once";
  // ~1/3 of the keys moved to the new kvstore (Low64 % N would have moved 2/3).
  EXPECT_GE(hits / lookups, 0.6) << hits << " of " << lookups << " cached blocks found after adding a kvstore";
  EXPECT_LT(hits, lookups) << "no key moved to the new kvstore";
  std::printf("after adding a third kvstore: %.0f of %.0f cached blocks still hit (%.1f%%)\n", hits, lookups,
              100 * hits / lookups);

  // That worker wrote the moved blocks to the new kvstore; a worker given the kvstores in yet another
  // order finds every block where the first one put it.
  ASSERT_TRUE(WaitFor([&] { return StoredBlocks(c) >= written + (lookups - hits); }, std::chrono::seconds(30)))
      << "the moved blocks never reached the new kvstore";
  auto other = c.AddWorker({1, 0, 2});
  ASSERT_TRUE(other.ok()) << other.status();
  for (int i = 0; i < kPrompts; ++i) {
    const GenerateResult result = Generate(c.worker_address(*other), Prompt(i), 1, false);
    ASSERT_TRUE(result.ok) << result.error;
    EXPECT_EQ(result.prefix.cached_tokens_kvstore(), kPrefixBlocks * kBlockTokens) << "prompt " << i;
  }
}

}  // namespace
}  // namespace strata::cluster_testing
