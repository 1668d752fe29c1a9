// The load test at CI size: 64 workers, 4 kvstores, 100k blocks in the index, 10k routed requests with
// their KV events. Asserts behaviour (every route answered, prefixes found where they are, hot prefixes
// spread, the index exact and emptied by departures), not time: bench/scheduler measures latency.
#include <map>
#include <set>

#include "common/status.h"
#include "gtest/gtest.h"
#include "scheduler/clock.h"
#include "scheduler/scheduler.h"
#include "tests/scheduler/load_cluster.h"

namespace strata::scheduler {
namespace {

TEST(SchedulerLoadTest, SixtyFourWorkersTenThousandRoutes) {
  testing::LoadSpec spec;
  spec.documents = 2000;
  spec.blocks_per_document = 50;
  SimClock clock;
  Options options;
  options.lease = absl::Seconds(5);
  Scheduler scheduler(options, &clock, nullptr);
  testing::LoadCluster cluster(&scheduler, spec);
  ASSERT_TRUE(cluster.Populate().ok());
  EXPECT_EQ(scheduler.IndexBlocks(), cluster.index_keys());

  uint64_t fresh_blocks = 0, shared_blocks = 0, local_blocks = 0;
  std::map<std::string, int> per_worker;
  std::set<std::string> hot_workers;
  for (int i = 0; i < 10000; ++i) {
    clock.Advance(absl::Milliseconds(10));  // 100 requests/s: about a third of the cluster's prefill rate
    if (i % 100 == 0) {
      ASSERT_TRUE(cluster.HeartbeatAll().ok());
    }
    const testing::LoadCluster::Request request = cluster.Next();
    auto routed = scheduler.Route(request.route);
    ASSERT_TRUE(routed.ok()) << routed.status();
    const Estimate& e = routed->decision.chosen;
    // Every shared block is somewhere (a kvstore has them all), and new blocks are nowhere.
    EXPECT_EQ(e.reused_blocks, static_cast<uint32_t>(request.shared_blocks)) << i;
    shared_blocks += request.shared_blocks;
    local_blocks += e.blocks_by_tier[static_cast<int>(Tier::kGpu)] + e.blocks_by_tier[static_cast<int>(Tier::kHost)];
    fresh_blocks += request.route.keys.size() - request.shared_blocks;
    ++per_worker[routed->worker_id];
    if (request.document == 0) hot_workers.insert(routed->worker_id);
    ASSERT_TRUE(cluster.Stored(routed->worker_id, request).ok());
  }
  // Most reused blocks come from the chosen worker's own memory, not over the network.
  EXPECT_GT(static_cast<double>(local_blocks), 0.8 * static_cast<double>(shared_blocks));
  // The hottest document (Zipf rank 1, ~12% of requests) is served by several workers.
  EXPECT_GE(hot_workers.size(), 3u);
  EXPECT_EQ(per_worker.size(), 64u);
  for (const auto& [id, n] : per_worker) EXPECT_LT(n, 10000 / 8) << id;  // nobody takes 8x its share
  // The index is exact: every shared key, plus each request's new blocks.
  EXPECT_EQ(scheduler.IndexBlocks(), cluster.index_keys() + fresh_blocks);

  // Holders leave (half deregister, half lapse): the index empties, nothing is routed to the departed.
  for (const HolderSnapshot& holder : scheduler.Holders()) {
    if (holder.epoch % 2 == 0) {
      ASSERT_TRUE(scheduler.Deregister(holder.holder_id, holder.epoch).ok());
    }
  }
  clock.Advance(absl::Seconds(10));
  EXPECT_EQ(scheduler.Route(cluster.Next().route).status().code(), absl::StatusCode::kUnavailable);
  scheduler.ExpireLeases();
  EXPECT_TRUE(scheduler.Holders().empty());
  EXPECT_EQ(scheduler.IndexBlocks(), 0u);
}

}  // namespace
}  // namespace strata::scheduler
