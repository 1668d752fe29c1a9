// The store tells its BlockListener every change of a published block, batched as it made it, and the
// EventBatcher coalesces them for the scheduler: publish (STORED at DRAM), DRAM -> SSD (STORED at SSD),
// promotion back (STORED at DRAM), gone (EVICTED); an inventory cut drops what it already covers.
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kvstore/checksum.h"
#include "kvstore/event_batcher.h"
#include "kvstore/store.h"
#include "tests/kvstore/store_fixture.h"

namespace strata::kvstore {
namespace {

using testing::Key;
using testing::StoreFixture;

using Type = BlockEvent::Type;

TEST(EventBatcher, CoalescesRunsOfOneKindInOrder) {
  EventBatcher batcher;
  const BlockKey a = Key(1), b = Key(2), c = Key(3);
  batcher.OnStored(Tier::kDram, {&a, 1});
  batcher.OnStored(Tier::kDram, {&b, 1});
  batcher.OnStored(Tier::kSsd, {&a, 1});
  batcher.OnEvicted({&c, 1});
  batcher.OnEvicted({&b, 1});
  std::vector<BlockEvent> drained = batcher.Drain();
  ASSERT_EQ(drained.size(), 3u);
  EXPECT_EQ(drained[0], (BlockEvent{Type::kStored, Tier::kDram, {a, b}}));
  EXPECT_EQ(drained[1], (BlockEvent{Type::kStored, Tier::kSsd, {a}}));
  EXPECT_EQ(drained[2], (BlockEvent{Type::kEvicted, Tier::kDram, {c, b}}));
  EXPECT_TRUE(batcher.Drain().empty());
}

TEST(StoreBlockEvents, CommitIsOneStoredEventAtDram) {
  StoreFixture fixture(8, /*with_ssd=*/false);
  fixture.Put({1, 2, 3});
  std::vector<BlockEvent> drained = fixture.batcher().Drain();
  ASSERT_EQ(drained.size(), 1u);
  EXPECT_EQ(drained[0], (BlockEvent{Type::kStored, Tier::kDram, {Key(1), Key(2), Key(3)}}));
}

TEST(StoreBlockEvents, EvictionToSsdAndPromotionAndDeleteAreReported) {
  StoreFixture fixture(2, /*with_ssd=*/true);
  fixture.Put({1, 2});
  fixture.Put({3});  // evicts one of 1, 2 to SSD
  std::vector<BlockEvent> drained = fixture.batcher().Drain();
  ASSERT_EQ(drained.size(), 3u);
  EXPECT_EQ(drained[1].type, Type::kStored);
  EXPECT_EQ(drained[1].tier, Tier::kSsd);
  ASSERT_EQ(drained[1].keys.size(), 1u);
  const BlockKey evicted = drained[1].keys[0];
  EXPECT_TRUE(evicted == Key(1) || evicted == Key(2));
  EXPECT_EQ(drained[2], (BlockEvent{Type::kStored, Tier::kDram, {Key(3)}}));

  // A get of the SSD block promotes it (STORED at DRAM), evicting another to SSD first.
  auto lease = fixture.store().BeginGet({&evicted, 1});
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(lease->slots[0].present);
  ASSERT_TRUE(fixture.store().EndGet(lease->lease_id).ok());
  drained = fixture.batcher().Drain();
  ASSERT_EQ(drained.size(), 2u);
  EXPECT_EQ(drained[0].tier, Tier::kSsd);
  EXPECT_EQ(drained[1], (BlockEvent{Type::kStored, Tier::kDram, {evicted}}));

  const std::vector<BlockKey> gone = {Key(1), Key(2), Key(3), Key(9)};
  EXPECT_EQ(fixture.store().Delete(gone), 3u);
  drained = fixture.batcher().Drain();
  ASSERT_EQ(drained.size(), 1u);
  EXPECT_EQ(drained[0].type, Type::kEvicted);
  EXPECT_EQ(drained[0].keys, (std::vector<BlockKey>{Key(1), Key(2), Key(3)}));
}

TEST(StoreBlockEvents, DramEvictionWithoutSsdIsEvicted) {
  StoreFixture fixture(1, /*with_ssd=*/false);
  fixture.Put({1});
  fixture.Put({2});
  std::vector<BlockEvent> drained = fixture.batcher().Drain();
  ASSERT_EQ(drained.size(), 3u);
  EXPECT_EQ(drained[1], (BlockEvent{Type::kEvicted, Tier::kDram, {Key(1)}}));
}

TEST(StoreBlockEvents, InventoryHoldsEveryBlockByTierAndTheCutDropsWhatItCovers) {
  StoreFixture fixture(2, /*with_ssd=*/true);
  fixture.Put({1, 2});
  (void)fixture.batcher().Drain();
  fixture.Put({3});  // pending: SSD for one of 1, 2; DRAM for 3
  BlockInventory inventory = fixture.store().Inventory([&] { fixture.batcher().Cut(); });
  EXPECT_EQ(inventory.dram.size(), 2u);
  ASSERT_EQ(inventory.ssd.size(), 1u);
  EXPECT_TRUE(fixture.batcher().Drain().empty());
  const BlockKey gone = inventory.ssd[0];
  EXPECT_EQ(fixture.store().Delete({&gone, 1}), 1u);
  std::vector<BlockEvent> drained = fixture.batcher().Drain();
  ASSERT_EQ(drained.size(), 1u);
  EXPECT_EQ(drained[0], (BlockEvent{Type::kEvicted, Tier::kDram, {gone}}));
}

}  // namespace
}  // namespace strata::kvstore
