#include "kvstore/size_class_allocator.h"

#include <map>
#include <random>

#include "gtest/gtest.h"

namespace strata::kvstore {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

TEST(SizeClassAllocator, RoundsUpToPowersOfTwoFromFourKiB) {
  EXPECT_EQ(SizeClassAllocator::ClassBytes(1), 4096u);
  EXPECT_EQ(SizeClassAllocator::ClassBytes(4096), 4096u);
  EXPECT_EQ(SizeClassAllocator::ClassBytes(4097), 8192u);
  EXPECT_EQ(SizeClassAllocator::ClassBytes(2 * kMiB), 2 * kMiB);
}

TEST(SizeClassAllocator, FillsTheArenaExactlyAndCoalescesBackToOneRange) {
  SizeClassAllocator allocator(64 * kMiB);
  std::vector<uint64_t> offsets;
  for (int i = 0; i < 32; ++i) {
    auto offset = allocator.Allocate(2 * kMiB);
    ASSERT_TRUE(offset.has_value());
    offsets.push_back(*offset);
  }
  EXPECT_FALSE(allocator.Allocate(1).has_value());
  EXPECT_EQ(allocator.allocated_bytes(), 64 * kMiB);
  for (uint64_t offset : offsets) allocator.Free(offset);
  EXPECT_EQ(allocator.allocated_bytes(), 0u);
  auto whole = allocator.Allocate(64 * kMiB);
  ASSERT_TRUE(whole.has_value());
  EXPECT_EQ(*whole, 0u);
}

TEST(SizeClassAllocator, ArenasThatAreNotPowersOfTwoUseEveryChunk) {
  SizeClassAllocator allocator(48 * kMiB);  // 32 + 16
  auto a = allocator.Allocate(32 * kMiB);
  auto b = allocator.Allocate(16 * kMiB);
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(allocator.Allocate(4096).has_value());
  allocator.Free(*b);
  allocator.Free(*a);
  EXPECT_FALSE(allocator.Allocate(48 * kMiB).has_value());  // chunks never merge across
  EXPECT_TRUE(allocator.Allocate(32 * kMiB).has_value());
}

TEST(SizeClassAllocator, RandomAllocationsNeverOverlap) {
  SizeClassAllocator allocator(16 * kMiB);
  std::mt19937_64 random(1);
  std::map<uint64_t, uint64_t> live;  // offset -> class bytes
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || random() % 2 == 0) {
      const uint64_t bytes = 1 + random() % (512 * 1024);
      auto offset = allocator.Allocate(bytes);
      if (!offset) continue;
      const uint64_t size = SizeClassAllocator::ClassBytes(bytes);
      EXPECT_EQ(*offset % size, 0u);
      auto next = live.lower_bound(*offset);
      if (next != live.end()) {
        EXPECT_LE(*offset + size, next->first);
      }
      if (next != live.begin()) {
        auto prev = std::prev(next);
        EXPECT_LE(prev->first + prev->second, *offset);
      }
      live[*offset] = size;
    } else {
      auto it = live.begin();
      std::advance(it, random() % live.size());
      allocator.Free(it->first);
      live.erase(it);
    }
  }
  for (auto& [offset, size] : live) allocator.Free(offset);
  EXPECT_EQ(allocator.allocated_bytes(), 0u);
  EXPECT_TRUE(allocator.Allocate(16 * kMiB).has_value());
}

}  // namespace
}  // namespace strata::kvstore
