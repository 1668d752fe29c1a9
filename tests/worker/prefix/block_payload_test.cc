// PayloadPool: slots handed out and given back, a miss when they are all taken, each payload with its
// MAC trailer in its slot, and payloads that outlive their pool.
#include "worker/prefix/block_payload.h"

#include <cstdlib>
#include <memory>
#include <vector>

#include "gtest/gtest.h"

namespace strata::worker {
namespace {

constexpr uint64_t kPayloadBytes = 4096;
const uint64_t kSlotBytes = PayloadPool::SlotBytes(kPayloadBytes);

// A region of `slots` slots on the heap (the worker's comes from Engine::AllocateHostBytes).
HostRegion Region(uint64_t slots) {
  auto memory = std::shared_ptr<std::byte[]>(new std::byte[slots * kSlotBytes]);
  return HostRegion{memory.get(), slots * kSlotBytes, memory};
}

TEST(PayloadPool, ASlotHoldsThePayloadAndItsTrailerOnACacheLine) {
  EXPECT_EQ(PayloadPool::SlotBytes(4096), 4096u + 64);
  EXPECT_EQ(PayloadPool::SlotBytes(12288), 12288u + 64);
  EXPECT_EQ(PayloadPool::SlotBytes(100), 192u);  // 100 + 32, rounded up
}

TEST(PayloadPool, HandsOutEachSlotOnceThenSaysItIsFull) {
  HostRegion region = Region(3);
  std::byte* base = region.data;
  PayloadPool pool(std::move(region), kPayloadBytes);
  ASSERT_EQ(pool.slots(), 3u);
  std::vector<std::shared_ptr<BlockPayload>> held;
  for (int i = 0; i < 3; ++i) held.push_back(pool.Allocate());
  // Slot 0 first, then 1, 2: payloads allocated together are adjacent.
  for (int i = 0; i < 3; ++i) {
    ASSERT_NE(held[i], nullptr);
    EXPECT_EQ(held[i]->data(), base + i * kSlotBytes);
    EXPECT_EQ(held[i]->size(), kPayloadBytes);
    EXPECT_EQ(held[i]->trailer().data(), held[i]->data() + kPayloadBytes);
    EXPECT_EQ(held[i]->stored_bytes(), kPayloadBytes + kBlockMacBytes);
    EXPECT_TRUE(pool.InRegion(*held[i]));
  }
  EXPECT_EQ(pool.slots_in_use(), 3u);
  EXPECT_EQ(pool.misses(), 0u);
  EXPECT_EQ(pool.Allocate(), nullptr);
  EXPECT_EQ(pool.misses(), 1u);

  // A payload's death gives its slot back, and the next allocation takes it.
  std::byte* freed = held[1]->data();
  held[1].reset();
  EXPECT_EQ(pool.slots_in_use(), 2u);
  std::shared_ptr<BlockPayload> again = pool.Allocate();
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->data(), freed);
  EXPECT_FALSE(pool.InRegion(BlockPayload(kPayloadBytes)));  // the heap
}

TEST(PayloadPool, APayloadKeepsItsMemoryAfterThePoolIsGone) {
  std::shared_ptr<BlockPayload> payload;
  {
    PayloadPool pool(Region(1), kPayloadBytes);
    payload = pool.Allocate();
    ASSERT_TRUE(pool.InRegion(*payload));
  }
  std::fill(payload->data(), payload->data() + payload->stored_bytes(), std::byte{7});  // ASan: still valid memory
  EXPECT_EQ(payload->trailer().back(), std::byte{7});
}

TEST(PayloadPool, AnEmptyRegionHasNoSlots) {
  PayloadPool pool(HostRegion{}, kPayloadBytes);
  EXPECT_EQ(pool.slots(), 0u);
  EXPECT_EQ(pool.Allocate(), nullptr);
  EXPECT_EQ(pool.misses(), 1u);
}

TEST(BlockPayload, EqualityComparesBytesWhereverTheyLive) {
  PayloadPool pool(Region(1), kPayloadBytes);
  std::shared_ptr<BlockPayload> slot = pool.Allocate();
  std::fill(slot->data(), slot->data() + kPayloadBytes, std::byte{3});
  EXPECT_EQ(*slot, BlockPayload(kPayloadBytes, std::byte{3}));
  slot->data()[100] = std::byte{4};
  EXPECT_FALSE(*slot == BlockPayload(kPayloadBytes, std::byte{3}));
  // A heap payload has its trailer too, zeroed.
  const BlockPayload heap(kPayloadBytes, std::byte{9});
  EXPECT_EQ(heap.trailer().size(), kBlockMacBytes);
  EXPECT_EQ(heap.trailer()[0], std::byte{0});
}

}  // namespace
}  // namespace strata::worker
