#include "scheduler/block_index.h"

#include "gtest/gtest.h"
#include "scheduler/clock.h"
#include "scheduler/scheduler.h"
#include "tests/scheduler/scheduler_testing.h"

namespace strata::scheduler {
namespace {

using testing::Keys;

TEST(SchedulerBlockIndex, StoredAndEvictedEventsTrackHoldersAndTiers) {
  BlockIndex index(100);
  index.AddHolder(0, HolderKind::kWorker);
  index.AddHolder(1, HolderKind::kKvstore);
  const auto keys = Keys(3);
  ASSERT_EQ(*index.Apply(0, 1, EventType::kStored, Tier::kGpu, keys), EventOutcome::kApplied);
  ASSERT_EQ(*index.Apply(1, 1, EventType::kStored, Tier::kKvstoreSsd, {keys[0]}), EventOutcome::kApplied);
  EXPECT_EQ(index.size(), 3u);
  const IndexEntry* entry = index.Find(keys[0]);
  ASSERT_NE(entry, nullptr);
  EXPECT_TRUE(entry->present.Has(0) && entry->present.Has(1));
  EXPECT_FALSE(entry->slow.Has(0));
  EXPECT_TRUE(entry->slow.Has(1));
  // G -> H is a STORED at H.
  ASSERT_EQ(*index.Apply(0, 2, EventType::kStored, Tier::kHost, {keys[0]}), EventOutcome::kApplied);
  EXPECT_TRUE(index.Find(keys[0])->slow.Has(0));
  EXPECT_EQ(index.holder_blocks(0), 3u);
  ASSERT_EQ(*index.Apply(0, 3, EventType::kEvicted, Tier::kGpu, keys), EventOutcome::kApplied);
  EXPECT_EQ(index.size(), 1u);  // keys[0] still at the kvstore
  EXPECT_EQ(index.holder_blocks(0), 0u);
  EXPECT_EQ(index.Find(keys[1]), nullptr);
}

TEST(SchedulerBlockIndex, ImpossibleTierIsRejectedAndNothingApplied) {
  BlockIndex index(100);
  index.AddHolder(0, HolderKind::kWorker);
  index.AddHolder(1, HolderKind::kKvstore);
  EXPECT_EQ(index.Apply(0, 1, EventType::kStored, Tier::kKvstoreDram, Keys(2)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(index.Apply(1, 1, EventType::kStored, Tier::kGpu, Keys(2)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(index.Apply(5, 1, EventType::kStored, Tier::kGpu, Keys(2)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(index.size(), 0u);
  EXPECT_EQ(index.applied_sequence(0), 0u);
}

TEST(SchedulerBlockIndex, DuplicateSequenceIsIgnoredAndAGapAsksForAnInventory) {
  BlockIndex index(100);
  index.AddHolder(0, HolderKind::kWorker);
  const auto keys = Keys(4);
  ASSERT_EQ(*index.Apply(0, 1, EventType::kStored, Tier::kGpu, {keys[0]}), EventOutcome::kApplied);
  EXPECT_EQ(*index.Apply(0, 1, EventType::kEvicted, Tier::kGpu, {keys[0]}), EventOutcome::kDuplicate);
  EXPECT_NE(index.Find(keys[0]), nullptr);
  EXPECT_EQ(*index.Apply(0, 3, EventType::kStored, Tier::kGpu, {keys[1]}), EventOutcome::kGap);
  EXPECT_TRUE(index.resync_pending(0));
  EXPECT_EQ(index.Find(keys[1]), nullptr);
  // Until the inventory arrives, further events are dropped, not half-applied.
  EXPECT_EQ(*index.Apply(0, 2, EventType::kStored, Tier::kGpu, {keys[2]}), EventOutcome::kAwaitingResync);
  EXPECT_EQ(index.Find(keys[2]), nullptr);
  // The inventory replaces the holder's view; the sequence continues from it.
  std::vector<std::pair<Tier, std::vector<BlockKey>>> tiers = {{Tier::kGpu, {keys[1], keys[2]}},
                                                               {Tier::kHost, {keys[3]}}};
  ASSERT_TRUE(index.ApplyInventory(0, 3, tiers).ok());
  EXPECT_FALSE(index.resync_pending(0));
  EXPECT_EQ(index.Find(keys[0]), nullptr);
  EXPECT_NE(index.Find(keys[1]), nullptr);
  EXPECT_TRUE(index.Find(keys[3])->slow.Has(0));
  EXPECT_EQ(index.holder_blocks(0), 3u);
  EXPECT_EQ(*index.Apply(0, 4, EventType::kEvicted, Tier::kGpu, {keys[1]}), EventOutcome::kApplied);
  EXPECT_EQ(index.holder_blocks(0), 2u);
}

TEST(SchedulerBlockIndex, AChunkedInventoryReplacesTheViewOnlyWhenComplete) {
  BlockIndex index(100);
  index.AddHolder(0, HolderKind::kWorker);
  const auto keys = Keys(4);
  ASSERT_EQ(*index.Apply(0, 1, EventType::kStored, Tier::kGpu, {keys[0]}), EventOutcome::kApplied);
  std::vector<std::pair<Tier, std::vector<BlockKey>>> first = {{Tier::kGpu, {keys[1]}}};
  std::vector<std::pair<Tier, std::vector<BlockKey>>> second = {{Tier::kHost, {keys[2], keys[3]}}};
  ASSERT_TRUE(index.ApplyInventory(0, 9, first, {.continues = false, .more_follow = true}).ok());
  EXPECT_EQ(index.Find(keys[0]), nullptr);  // replaced
  EXPECT_TRUE(index.resync_pending(0));
  EXPECT_EQ(*index.Apply(0, 10, EventType::kStored, Tier::kGpu, {keys[0]}), EventOutcome::kAwaitingResync);
  // A chunk of another inventory cannot continue this one.
  EXPECT_EQ(index.ApplyInventory(0, 8, second, {.continues = true, .more_follow = false}).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(index.ApplyInventory(0, 9, second, {.continues = true, .more_follow = false}).ok());
  EXPECT_FALSE(index.resync_pending(0));
  EXPECT_EQ(index.applied_sequence(0), 9u);
  EXPECT_EQ(index.holder_blocks(0), 3u);
  EXPECT_EQ(*index.Apply(0, 10, EventType::kStored, Tier::kGpu, {keys[0]}), EventOutcome::kApplied);
  // A continuation with no inventory open is refused.
  EXPECT_EQ(index.ApplyInventory(0, 10, second, {.continues = true, .more_follow = false}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SchedulerBlockIndex, FirstEventWithoutInventoryMustBeSequenceOne) {
  BlockIndex index(100);
  index.AddHolder(0, HolderKind::kWorker);
  EXPECT_EQ(*index.Apply(0, 5, EventType::kStored, Tier::kGpu, Keys(1)), EventOutcome::kGap);
}

TEST(SchedulerBlockIndex, RemovingAHolderDropsOnlyItsEntries) {
  BlockIndex index(100);
  index.AddHolder(0, HolderKind::kWorker);
  index.AddHolder(70, HolderKind::kWorker);  // second word of the holder set
  const auto keys = Keys(3);
  ASSERT_TRUE(index.Apply(0, 1, EventType::kStored, Tier::kGpu, keys).ok());
  ASSERT_TRUE(index.Apply(70, 1, EventType::kStored, Tier::kHost, {keys[2]}).ok());
  index.RemoveHolder(0);
  EXPECT_EQ(index.size(), 1u);
  ASSERT_NE(index.Find(keys[2]), nullptr);
  EXPECT_FALSE(index.Find(keys[2])->present.Has(0));
  EXPECT_TRUE(index.Find(keys[2])->present.Has(70));
  // The slot can be tracked again from scratch.
  index.AddHolder(0, HolderKind::kKvstore);
  EXPECT_EQ(index.applied_sequence(0), 0u);
}

TEST(SchedulerBlockIndex, FullIndexDropsNewKeysButKeepsUpdatingKnownOnes) {
  BlockIndex index(2);
  index.AddHolder(0, HolderKind::kWorker);
  index.AddHolder(1, HolderKind::kWorker);
  const auto keys = Keys(4);
  ASSERT_TRUE(index.Apply(0, 1, EventType::kStored, Tier::kGpu, keys).ok());
  EXPECT_EQ(index.size(), 2u);
  EXPECT_EQ(index.dropped_stores(), 2u);
  ASSERT_TRUE(index.Apply(1, 1, EventType::kStored, Tier::kGpu, {keys[0]}).ok());
  EXPECT_TRUE(index.Find(keys[0])->present.Has(1));
  ASSERT_TRUE(index.Apply(0, 2, EventType::kEvicted, Tier::kGpu, {keys[1]}).ok());
  ASSERT_TRUE(index.Apply(1, 2, EventType::kStored, Tier::kGpu, {keys[3]}).ok());  // room again
  EXPECT_NE(index.Find(keys[3]), nullptr);
  EXPECT_EQ(index.dropped_stores(), 2u);
}

TEST(SchedulerBlockIndex, PackedKeysRoundTripAndOddLengthsAreRefused) {
  const auto keys = Keys(3);
  const std::string packed = PackKeys(keys);
  EXPECT_EQ(packed.size(), 48u);
  EXPECT_EQ(*UnpackKeys(packed), keys);
  EXPECT_EQ(UnpackKeys(packed.substr(0, 47)).status().code(), absl::StatusCode::kInvalidArgument);
}

// Through the Scheduler: events of unknown holders, lost events, and a restart.
TEST(IndexThroughScheduler, EventsForUnknownHoldersAreErrorsAndChangeNothing) {
  SimClock clock;
  Scheduler scheduler(Options{}, &clock, nullptr);
  KvEventIn event;
  event.sequence = 1;
  event.keys = Keys(2);
  EXPECT_EQ(scheduler.ApplyEvents("ghost", 1, nullptr, {event}).status().code(), absl::StatusCode::kNotFound);
  auto w0 = scheduler.Register(testing::Worker("w0"));
  ASSERT_TRUE(w0.ok());
  EXPECT_EQ(scheduler.ApplyEvents("w0", w0->epoch + 1, nullptr, {event}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(scheduler.IndexBlocks(), 0u);
  // An impossible tier mid-batch: what came before stays, the rest is dropped, a resync is asked for.
  KvEventIn bad = event;
  bad.sequence = 2;
  bad.tier = Tier::kKvstoreSsd;
  KvEventIn after = event;
  after.sequence = 3;
  after.keys = Keys(2, 9);
  EXPECT_EQ(scheduler.ApplyEvents("w0", w0->epoch, nullptr, {event, bad, after}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler.IndexBlocks(), 2u);
  EXPECT_TRUE(scheduler.Holders()[0].resync_pending);
}

TEST(IndexThroughScheduler, HeartbeatThatOutrunsAppliedEventsRequestsAResync) {
  SimClock clock;
  Scheduler scheduler(Options{}, &clock, nullptr);
  auto w0 = scheduler.Register(testing::Worker("w0"));
  ASSERT_TRUE(w0.ok());
  // The holder says it sent 5 events; none arrived. One heartbeat later it is asked for an inventory.
  auto beat = scheduler.Heartbeat("w0", w0->epoch, std::nullopt, 5);
  ASSERT_TRUE(beat.ok());
  EXPECT_FALSE(beat->resync_required);
  beat = scheduler.Heartbeat("w0", w0->epoch, std::nullopt, 5);
  ASSERT_TRUE(beat.ok());
  EXPECT_TRUE(beat->resync_required);
  Inventory inventory;
  inventory.sequence = 5;
  inventory.tiers.emplace_back(Tier::kGpu, Keys(3));
  auto applied = scheduler.ApplyEvents("w0", w0->epoch, &inventory, {});
  ASSERT_TRUE(applied.ok());
  EXPECT_FALSE(applied->resync_required);
  EXPECT_EQ(applied->applied_sequence, 5u);
  beat = scheduler.Heartbeat("w0", w0->epoch, std::nullopt, 5);
  EXPECT_FALSE(beat->resync_required);
}

TEST(IndexThroughScheduler, RestartRebuildsTheSameViewFromRegistrationsAndInventories) {
  SimClock clock;
  Options options;
  options.tie_window = absl::ZeroDuration();
  auto before = std::make_unique<Scheduler>(options, &clock, nullptr);
  const auto prefix = Keys(6, 1);
  const auto other = Keys(6, 2);
  // w0 holds the whole prefix in G, w1 half of it in H, the kvstore the other request's blocks.
  auto w0 = before->Register(testing::Worker("w0"));
  auto w1 = before->Register(testing::Worker("w1"));
  auto kv = before->Register(testing::Kvstore("kv0"));
  ASSERT_TRUE(w0.ok() && w1.ok() && kv.ok());
  auto event = [](uint64_t sequence, Tier tier, std::vector<BlockKey> keys) {
    KvEventIn e;
    e.sequence = sequence;
    e.tier = tier;
    e.keys = std::move(keys);
    return e;
  };
  ASSERT_TRUE(before->ApplyEvents("w0", w0->epoch, nullptr, {event(1, Tier::kGpu, prefix)}).ok());
  ASSERT_TRUE(
      before->ApplyEvents("w1", w1->epoch, nullptr, {event(1, Tier::kHost, {prefix.begin(), prefix.begin() + 3})})
          .ok());
  ASSERT_TRUE(before->ApplyEvents("kv0", kv->epoch, nullptr, {event(1, Tier::kKvstoreDram, other)}).ok());
  KeyRoute route_a{testing::Fingerprint(), prefix, 30, Policy::kCacheAware};
  KeyRoute route_b{testing::Fingerprint(), other, 30, Policy::kCacheAware};
  auto estimates_a = before->EstimateAll(route_a);
  auto estimates_b = before->EstimateAll(route_b);
  ASSERT_TRUE(estimates_a.ok() && estimates_b.ok());
  const uint64_t blocks = before->IndexBlocks();
  before.reset();  // the scheduler dies

  // A fresh scheduler knows nothing; holders get NotFound, register again, and send their inventories.
  Scheduler after(options, &clock, nullptr);
  EXPECT_EQ(after.Heartbeat("w0", w0->epoch, std::nullopt, 1).status().code(), absl::StatusCode::kNotFound);
  auto w0b = after.Register(testing::Worker("w0"));
  auto w1b = after.Register(testing::Worker("w1"));
  auto kvb = after.Register(testing::Kvstore("kv0"));
  ASSERT_TRUE(w0b.ok() && w1b.ok() && kvb.ok());
  Inventory i0{1, {{Tier::kGpu, prefix}}};
  Inventory i1{1, {{Tier::kHost, {prefix.begin(), prefix.begin() + 3}}}};
  Inventory ik{1, {{Tier::kKvstoreDram, other}}};
  ASSERT_TRUE(after.ApplyEvents("w0", w0b->epoch, &i0, {}).ok());
  ASSERT_TRUE(after.ApplyEvents("w1", w1b->epoch, &i1, {}).ok());
  ASSERT_TRUE(after.ApplyEvents("kv0", kvb->epoch, &ik, {}).ok());
  EXPECT_EQ(after.IndexBlocks(), blocks);
  auto rebuilt_a = after.EstimateAll(route_a);
  auto rebuilt_b = after.EstimateAll(route_b);
  ASSERT_TRUE(rebuilt_a.ok() && rebuilt_b.ok());
  ASSERT_EQ(rebuilt_a->size(), estimates_a->size());
  for (size_t i = 0; i < rebuilt_a->size(); ++i) {
    EXPECT_EQ((*rebuilt_a)[i].reused_blocks, (*estimates_a)[i].reused_blocks);
    EXPECT_EQ((*rebuilt_a)[i].blocks_by_tier, (*estimates_a)[i].blocks_by_tier);
    EXPECT_DOUBLE_EQ((*rebuilt_a)[i].ttft_s, (*estimates_a)[i].ttft_s);
    EXPECT_EQ((*rebuilt_b)[i].blocks_by_tier, (*estimates_b)[i].blocks_by_tier);
  }
  // Events continue from the inventory's sequence.
  auto next = after.ApplyEvents("w0", w0b->epoch, nullptr, {event(2, Tier::kHost, {prefix[5]})});
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->resync_required);
}

}  // namespace
}  // namespace strata::scheduler
