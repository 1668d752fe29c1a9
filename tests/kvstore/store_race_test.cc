// Races inside one Store, driven hard from several threads: gets of the same SSD-only blocks while puts
// evict to SSD (write-back lets go of the store's lock while it writes). Every block read must carry its
// own bytes, and the store's invariants (STRATA_CHECKs in the eviction policy) must hold throughout.
#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kvstore/store_fixture.h"

namespace strata::kvstore {
namespace {

using testing::StoreFixture;

// Two gets of one SSD-only block used to promote it twice when the first one's DRAM allocation waited on
// a write-back: the second read it meanwhile, and both published it (a double insert into the eviction
// policy, and a leaked copy).
TEST(StoreRace, GetsOfOneSsdBlockDuringWriteBacksPromoteItOnceWithItsBytes) {
  StoreFixture fixture(/*blocks=*/8, /*with_ssd=*/true);
  constexpr int kHot = 16;  // ids 0..15: read by every getter, mostly on SSD (DRAM holds 8 blocks)
  for (uint8_t id = 0; id < kHot; ++id) fixture.Put({id});

  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0}, found{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 random(static_cast<unsigned>(t));
      while (!stop.load()) {
        absl::StatusOr<bool> got = fixture.GetAndCheck(static_cast<uint8_t>(random() % kHot));
        if (!got.ok() && got.status().code() == absl::StatusCode::kDataLoss) ++wrong;
        if (got.ok() && *got) ++found;
      }
    });
  }
  // Fresh blocks (ids 16..255, again and again after they are deleted) keep DRAM full of blocks that
  // are not on SSD yet, so every allocation for a promotion waits on a write-back.
  for (int round = 0; round < 6; ++round) {
    for (int id = kHot; id < 256; ++id) (void)fixture.TryPut({static_cast<uint8_t>(id)});
    std::vector<BlockKey> fresh;
    for (int id = kHot; id < 256; ++id) fresh.push_back(testing::Key(static_cast<uint8_t>(id)));
    fixture.store().Delete(fresh);
  }
  stop = true;
  for (std::thread& thread : threads) thread.join();

  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GT(found.load(), 0);
  const StoreStats stats = fixture.store().Stats();
  EXPECT_EQ(stats.pinned_bytes, 0u);
  EXPECT_EQ(stats.reserved_bytes, 0u);
  // Every block in DRAM is counted once: a double promotion would leave more allocated than counted.
  EXPECT_EQ(stats.arena_allocated_bytes, stats.dram.used_bytes);
  for (uint8_t id = 0; id < kHot; ++id) {
    absl::StatusOr<bool> got = fixture.GetAndCheck(id);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE(*got) << "block " << int{id} << " was lost";
  }
}

}  // namespace
}  // namespace strata::kvstore
