#include "scheduler/placement.h"

#include <map>
#include <numeric>

#include "common/rendezvous.h"
#include "common/status.h"
#include "common/strings.h"
#include "gtest/gtest.h"
#include "scheduler/clock.h"
#include "scheduler/scheduler.h"
#include "tests/scheduler/scheduler_testing.h"

namespace strata::scheduler {
namespace {

using testing::Keys;
using testing::Worker;

// A scheduler on a simulated clock with helpers to register holders and give them blocks.
class SchedulerPlacementTest : public ::testing::Test {
 protected:
  SchedulerPlacementTest() { options_.tie_window = absl::ZeroDuration(); }

  void Start() { scheduler_ = std::make_unique<Scheduler>(options_, &clock_, nullptr); }

  uint64_t Add(const Registration& registration) {
    if (!scheduler_) Start();
    auto result = scheduler_->Register(registration);
    STRATA_CHECK(result.ok());
    epochs_[registration.holder_id] = result->epoch;
    return result->epoch;
  }

  void Hold(const std::string& id, Tier tier, const std::vector<BlockKey>& keys) {
    KvEventIn event;
    event.sequence = ++sequences_[id];
    event.tier = tier;
    event.keys = keys;
    auto result = scheduler_->ApplyEvents(id, epochs_[id], nullptr, {event});
    ASSERT_TRUE(result.ok()) << result.status();
  }

  absl::StatusOr<RouteResult> Route(const std::vector<BlockKey>& keys, uint64_t tokens,
                                    Policy policy = Policy::kCacheAware, uint8_t fingerprint = 0x11) {
    KeyRoute route;
    route.model_fingerprint = testing::Fingerprint(fingerprint);
    route.keys = keys;
    route.prompt_tokens = tokens;
    route.policy = policy;
    return scheduler_->Route(route);
  }

  std::map<std::string, Estimate> Estimates(const std::vector<BlockKey>& keys, uint64_t tokens) {
    KeyRoute route{testing::Fingerprint(), keys, tokens, std::nullopt};
    auto all = scheduler_->EstimateAll(route);
    STRATA_CHECK(all.ok());
    std::map<std::string, Estimate> out;
    for (const Estimate& e : *all) out[StrCat("w", e.slot)] = e;  // slots follow registration order
    return out;
  }

  Options options_;
  SimClock clock_;
  std::unique_ptr<Scheduler> scheduler_;
  std::map<std::string, uint64_t> epochs_;
  std::map<std::string, uint64_t> sequences_;
};

TEST_F(SchedulerPlacementTest, CacheAwarePicksTheWorkerHoldingThePrefix) {
  for (const char* id : {"w0", "w1", "w2"}) Add(Worker(id));
  const auto keys = Keys(5);
  Hold("w1", Tier::kGpu, keys);
  auto routed = Route(keys, 21);
  ASSERT_TRUE(routed.ok()) << routed.status();
  EXPECT_EQ(routed->worker_id, "w1");
  const Estimate& e = routed->decision.chosen;
  EXPECT_EQ(e.reused_blocks, 5u);
  EXPECT_EQ(e.blocks_by_tier[static_cast<int>(Tier::kGpu)], 5u);
  EXPECT_EQ(e.prefill_tokens, 1u);
  EXPECT_NEAR(e.ttft_s, 1e-3, 1e-9);  // one token at 1 ms, nothing queued, nothing fetched
}

TEST_F(SchedulerPlacementTest, OnlyALeadingPrefixCounts) {
  Add(Worker("w0"));
  Add(Worker("w1"));
  const auto keys = Keys(5);
  Hold("w0", Tier::kGpu, {keys.begin() + 1, keys.end()});  // everything but the first block: useless
  Hold("w1", Tier::kGpu, {keys[0]});
  auto estimates = Estimates(keys, 20);
  EXPECT_EQ(estimates["w0"].reused_blocks, 0u);
  EXPECT_EQ(estimates["w1"].reused_blocks, 1u);
  EXPECT_EQ(Route(keys, 20)->worker_id, "w1");
}

TEST_F(SchedulerPlacementTest, HostTierCostsItsTransferAndGpuCostsNothing) {
  Add(Worker("w0"));
  Add(Worker("w1"));
  const auto keys = Keys(5);
  Hold("w0", Tier::kHost, keys);
  Hold("w1", Tier::kGpu, keys);
  auto estimates = Estimates(keys, 21);
  EXPECT_NEAR(estimates["w0"].fetch_s, 5 * 1e-3, 1e-9);  // 1 MB at 1 GB/s per block
  EXPECT_EQ(estimates["w0"].blocks_by_tier[static_cast<int>(Tier::kHost)], 5u);
  EXPECT_NEAR(estimates["w1"].fetch_s, 0, 1e-12);
  EXPECT_EQ(Route(keys, 21)->worker_id, "w1");
}

TEST_F(SchedulerPlacementTest, FetchesFromAKvstoreOnlyWhenThatBeatsRecomputing) {
  Registration slow = Worker("w0");  // 10 ms a block over the network, 4 ms to recompute it
  Add(slow);
  Registration fast = Worker("w1");
  fast.worker.network_bytes_per_s = 1e10;  // 0.1 ms a block
  Add(fast);
  Add(testing::Kvstore("kv0", /*ssd_read_bytes_per_s=*/1e9));
  const auto keys = Keys(5);
  Hold("kv0", Tier::kKvstoreDram, {keys.begin(), keys.begin() + 3});
  Hold("kv0", Tier::kKvstoreSsd, {keys.begin() + 3, keys.end()});
  auto estimates = Estimates(keys, 21);
  EXPECT_EQ(estimates["w0"].reused_blocks, 0u);
  EXPECT_NEAR(estimates["w0"].prefill_s, 21e-3, 1e-9);
  EXPECT_EQ(estimates["w1"].reused_blocks, 5u);
  EXPECT_EQ(estimates["w1"].blocks_by_tier[static_cast<int>(Tier::kKvstoreDram)], 3u);
  EXPECT_EQ(estimates["w1"].blocks_by_tier[static_cast<int>(Tier::kKvstoreSsd)], 2u);
  // DRAM at the network rate, SSD at the slower of SSD (1 GB/s) and network (10 GB/s).
  EXPECT_NEAR(estimates["w1"].fetch_s, 3 * 1e-4 + 2 * 1e-3, 1e-9);
  EXPECT_EQ(Route(keys, 21)->worker_id, "w1");
}

TEST_F(SchedulerPlacementTest, AKvstoreCopyCountsOnTheKvstoreTheWorkerAsksAtThatKvstoresRate) {
  // Two kvstores of different SSD rates; w0 and w1 name them in opposite orders, w2 does not say.
  Registration w0 = Worker("w0");
  w0.worker.network_bytes_per_s = 1e10;  // 0.1 ms a block; recomputing one costs 4 ms
  w0.worker.kvstores = {"kv0:2", "kv1:2"};
  Registration w1 = w0;
  w1.holder_id = "w1";
  w1.address = "w1:1";
  w1.worker.kvstores = {"kv1:2", "kv0:2"};
  Registration w2 = w0;
  w2.holder_id = "w2";
  w2.address = "w2:1";
  w2.worker.kvstores.clear();
  Add(w0);
  Add(w1);
  Add(w2);
  Add(testing::Kvstore("kv0", /*ssd_read_bytes_per_s=*/1e9));  // 1 ms a block
  Add(testing::Kvstore("kv1", /*ssd_read_bytes_per_s=*/5e8));  // 2 ms a block
  const RendezvousHash hash({"kv0:2", "kv1:2"});

  // Every block on the SSD of the kvstore that owns it: priced at that kvstore's rate.
  const auto keys = Keys(8);
  std::vector<BlockKey> owned[2];
  double expected_fetch_s = 0;
  for (const BlockKey& key : keys) {
    const size_t owner = hash.Pick(key);
    owned[owner].push_back(key);
    expected_fetch_s += owner == 0 ? 1e-3 : 2e-3;
  }
  ASSERT_FALSE(owned[0].empty());
  ASSERT_FALSE(owned[1].empty());
  Hold("kv0", Tier::kKvstoreSsd, owned[0]);
  Hold("kv1", Tier::kKvstoreSsd, owned[1]);
  auto estimates = Estimates(keys, 33);
  for (const char* w : {"w0", "w1"}) {
    EXPECT_EQ(estimates[w].reused_blocks, 8u) << w;
    EXPECT_EQ(estimates[w].blocks_by_tier[static_cast<int>(Tier::kKvstoreSsd)], 8u) << w;
    EXPECT_NEAR(estimates[w].fetch_s, expected_fetch_s, 1e-9) << w;
  }

  // Blocks all on kv0, whichever owns them: a worker that named its kvstores asks kv1 for kv1's keys and
  // misses there, so its reusable prefix ends at the first of them; one that did not say counts every copy.
  const auto other = Keys(8, /*seed=*/2);
  Hold("kv0", Tier::kKvstoreDram, other);
  uint32_t leading_on_kv0 = 0;
  while (leading_on_kv0 < other.size() && hash.Pick(other[leading_on_kv0]) == 0) ++leading_on_kv0;
  ASSERT_LT(leading_on_kv0, other.size()) << "pick keys with a block that kv1 owns";
  estimates = Estimates(other, 33);
  EXPECT_EQ(estimates["w0"].reused_blocks, leading_on_kv0);
  EXPECT_EQ(estimates["w1"].reused_blocks, leading_on_kv0);
  EXPECT_EQ(estimates["w2"].reused_blocks, 8u);
}

TEST_F(SchedulerPlacementTest, AMixedPrefixOfLocalAndKvstoreBlocksIsReused) {
  Registration fast = Worker("w0");
  fast.worker.network_bytes_per_s = 1e10;
  Add(fast);
  Add(testing::Kvstore("kv0"));
  const auto keys = Keys(4);
  Hold("w0", Tier::kGpu, {keys[0], keys[2]});
  Hold("kv0", Tier::kKvstoreDram, {keys[1]});
  auto estimates = Estimates(keys, 17);
  EXPECT_EQ(estimates["w0"].reused_blocks, 3u);  // block 3 is held nowhere
  EXPECT_EQ(estimates["w0"].blocks_by_tier[static_cast<int>(Tier::kGpu)], 2u);
  EXPECT_EQ(estimates["w0"].blocks_by_tier[static_cast<int>(Tier::kKvstoreDram)], 1u);
}

TEST_F(SchedulerPlacementTest, AQueueLongerThanTheSavingSendsTheRequestElsewhere) {
  Add(Worker("w0"));
  Add(Worker("w1"));
  const auto keys = Keys(5);
  Hold("w0", Tier::kGpu, keys);
  LoadReport busy;
  busy.queue_wait_s = 10;
  ASSERT_TRUE(scheduler_->Heartbeat("w0", epochs_["w0"], busy, 1).ok());
  auto routed = Route(keys, 21);
  EXPECT_EQ(routed->worker_id, "w1");
  EXPECT_NEAR(routed->decision.chosen.ttft_s, 21e-3, 1e-9);
  // The queue drains with time: ten seconds later w0 wins again.
  clock_.Advance(absl::Seconds(11));
  ASSERT_TRUE(scheduler_->Heartbeat("w0", epochs_["w0"], std::nullopt, 1).ok());  // lease only
  ASSERT_TRUE(scheduler_->Heartbeat("w1", epochs_["w1"], LoadReport{}, 0).ok());
  EXPECT_EQ(Route(keys, 21)->worker_id, "w0");
}

TEST_F(SchedulerPlacementTest, UnderLoadLocalityOutweighsASlightlyShorterQueue) {
  Add(Worker("w0"));
  Add(Worker("w1"));
  const auto keys = Keys(10);
  Hold("w0", Tier::kGpu, keys);  // saves 40 ms
  const double waits[] = {20.1, 20.0};
  for (int i = 0; i < 2; ++i) {
    LoadReport load;
    load.queue_wait_s = waits[i];
    ASSERT_TRUE(scheduler_->Heartbeat(StrCat("w", i), epochs_[StrCat("w", i)], load, sequences_[StrCat("w", i)]).ok());
  }
  // Plain TTFT would say w1 (20.044 s against 20.104 s); with every queue 20 s long the 40 ms of work
  // w0 saves is worth more than its 100 ms longer queue.
  auto routed = Route(keys, 44);
  EXPECT_EQ(routed->worker_id, "w0");
  EXPECT_NEAR(routed->decision.chosen.ttft_s, 20.104, 1e-9);  // the estimate is still the TTFT
}

TEST_F(SchedulerPlacementTest, UnderLoadAHolderFarBehindTheMeanIsNotACandidate) {
  for (int i = 0; i < 3; ++i) Add(Worker(StrCat("w", i)));
  const auto keys = Keys(10);
  Hold("w0", Tier::kGpu, keys);
  const double waits[] = {40.0, 10.0, 10.0};  // mean 20 s: the bound is 1.5 x 20 + 2 = 32 s
  for (int i = 0; i < 3; ++i) {
    LoadReport load;
    load.queue_wait_s = waits[i];
    ASSERT_TRUE(scheduler_->Heartbeat(StrCat("w", i), epochs_[StrCat("w", i)], load, sequences_[StrCat("w", i)]).ok());
  }
  EXPECT_NE(Route(keys, 44)->worker_id, "w0");
}

TEST_F(SchedulerPlacementTest, EqualWorkersDoNotHerdOntoOne) {
  options_.tie_window = absl::Milliseconds(5);
  for (int i = 0; i < 4; ++i) Add(Worker(StrCat("w", i)));
  std::map<std::string, int> counts;
  // Identical cold requests, no heartbeats in between.
  for (int i = 0; i < 40; ++i) ++counts[Route(Keys(5, static_cast<uint8_t>(i + 10)), 20)->worker_id];
  ASSERT_EQ(counts.size(), 4u);
  for (const auto& [id, n] : counts) EXPECT_EQ(n, 10) << id;
}

TEST_F(SchedulerPlacementTest, AHotPrefixIsServedByMoreThanOneWorker) {
  for (int i = 0; i < 3; ++i) Add(Worker(StrCat("w", i)));
  const auto keys = Keys(10);
  Hold("w0", Tier::kGpu, keys);  // saves 40 ms of prefill on w0
  std::map<std::string, int> counts;
  for (int i = 0; i < 30; ++i) ++counts[Route(keys, 44)->worker_id];
  EXPECT_GE(counts.size(), 2u);
  EXPECT_GT(counts["w0"], counts["w1"]);  // the holder still takes the largest share
}

TEST_F(SchedulerPlacementTest, RoundRobinCyclesThroughLiveWorkers) {
  for (int i = 0; i < 3; ++i) Add(Worker(StrCat("w", i)));
  Hold("w2", Tier::kGpu, Keys(5));
  std::vector<std::string> order;
  for (int i = 0; i < 6; ++i) order.push_back(Route(Keys(5), 21, Policy::kRoundRobin)->worker_id);
  EXPECT_EQ(order, (std::vector<std::string>{"w0", "w1", "w2", "w0", "w1", "w2"}));
  EXPECT_EQ(Route(Keys(5), 21, Policy::kRoundRobin)->decision.policy, Policy::kRoundRobin);
}

TEST_F(SchedulerPlacementTest, LeastLoadedPicksTheShortestQueueRegardlessOfCache) {
  for (int i = 0; i < 3; ++i) Add(Worker(StrCat("w", i)));
  Hold("w0", Tier::kGpu, Keys(5));
  const double waits[] = {3.0, 1.0, 2.0};
  for (int i = 0; i < 3; ++i) {
    LoadReport load;
    load.queue_wait_s = waits[i];
    const std::string id = StrCat("w", i);
    ASSERT_TRUE(scheduler_->Heartbeat(id, epochs_[id], load, sequences_[id]).ok());
  }
  EXPECT_EQ(Route(Keys(5), 21, Policy::kLeastLoaded)->worker_id, "w1");
  // Queued tokens stand in for a missing wait estimate: 5000 tokens at 1 ms = 5 s.
  LoadReport tokens_only;
  tokens_only.queued_prefill_tokens = 5000;
  ASSERT_TRUE(scheduler_->Heartbeat("w1", epochs_["w1"], tokens_only, 0).ok());
  EXPECT_EQ(Route(Keys(5), 21, Policy::kLeastLoaded)->worker_id, "w2");
}

TEST_F(SchedulerPlacementTest, OnlyWorkersOfTheRequestedModelAreCandidates) {
  Add(Worker("w0", 0x11));
  Add(Worker("w1", 0x22));
  Hold("w0", Tier::kGpu, Keys(5));
  EXPECT_EQ(Route(Keys(5), 21, Policy::kCacheAware, 0x22)->worker_id, "w1");
  EXPECT_EQ(Route(Keys(5), 21, Policy::kCacheAware, 0x33).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(SchedulerPlacementTest, BadRouteInputIsRefused) {
  Add(Worker("w0"));
  EXPECT_EQ(Route(Keys(6), 20).status().code(), absl::StatusCode::kInvalidArgument);  // 6 blocks of 4 > 20 tokens
  EXPECT_EQ(Route({}, 0).status().code(), absl::StatusCode::kInvalidArgument);
  TokenRoute empty;
  empty.model_fingerprint = testing::Fingerprint();
  EXPECT_EQ(scheduler_->Route(empty).status().code(), absl::StatusCode::kInvalidArgument);
}

// The scheduler's tokens -> keys path is common/'s scheme v1: the keys pinned in
// tests/common/block_key_test.cc (an independent implementation's) find the worker that holds them.
TEST_F(SchedulerPlacementTest, TokenRoutesComputePinnedSchemeV1Keys) {
  Registration pinned = Worker("w0");
  std::iota(pinned.key_context.model_fingerprint.begin(), pinned.key_context.model_fingerprint.end(), 0);
  pinned.key_context.block_tokens = 4;
  pinned.key_context.kv_dtype = DType::kBF16;
  Add(pinned);
  Registration other = pinned;
  other.holder_id = "w1";
  Add(other);
  Hold("w1", Tier::kGpu,
       {*BlockKeyFromHex("41a70297071eb1919a7fd4d43f579827"), *BlockKeyFromHex("e09f2fdc1845a0d97ed59aa25474905a")});
  Hold("w0", Tier::kGpu,
       {*BlockKeyFromHex("14a1ee68ab57d199880c8c254063b7b4"), *BlockKeyFromHex("804c290a6549d70f516dcd806099c7b6")});
  TokenRoute route;
  route.model_fingerprint = pinned.key_context.model_fingerprint;
  route.token_ids.resize(10);
  std::iota(route.token_ids.begin(), route.token_ids.end(), 1000);
  auto routed = scheduler_->Route(route);
  ASSERT_TRUE(routed.ok()) << routed.status();
  EXPECT_EQ(routed->worker_id, "w1");
  EXPECT_EQ(routed->decision.chosen.reused_blocks, 2u);
  EXPECT_EQ(routed->decision.chosen.prefill_tokens, 2u);
  // The tenant "acme" salts every key: its pinned keys are on w0.
  route.tenant = "acme";
  routed = scheduler_->Route(route);
  ASSERT_TRUE(routed.ok());
  EXPECT_EQ(routed->worker_id, "w0");
  EXPECT_EQ(routed->decision.chosen.reused_blocks, 2u);
}

}  // namespace
}  // namespace strata::scheduler
