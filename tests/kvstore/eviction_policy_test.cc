#include "kvstore/eviction_policy.h"

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace strata::kvstore {
namespace {

BlockKey Key(uint8_t i) {
  BlockKey key;
  key.bytes[0] = i;
  key.bytes[15] = 0xA5;
  return key;
}

EvictionRank AllLeaves(const BlockKey&) { return EvictionRank::kLeaf; }

TEST(EvictionPolicy, LruEvictsTheLeastRecentlyUsed) {
  auto policy = MakeEvictionPolicy(EvictionPolicyKind::kLru);
  for (uint8_t i = 0; i < 4; ++i) policy->Insert(Key(i));
  policy->Touch(Key(0));
  EXPECT_EQ(policy->Evict(AllLeaves), Key(1));
  EXPECT_EQ(policy->Evict(AllLeaves), Key(2));
  EXPECT_EQ(policy->size(), 2u);
}

TEST(EvictionPolicy, PinnedBlocksAreNeverChosen) {
  for (auto kind : {EvictionPolicyKind::kLru, EvictionPolicyKind::kS3Fifo}) {
    auto policy = MakeEvictionPolicy(kind);
    for (uint8_t i = 0; i < 10; ++i) policy->Insert(Key(i));
    absl::flat_hash_set<BlockKey> pinned = {Key(0), Key(1), Key(2)};
    auto rank = [&](const BlockKey& key) { return pinned.contains(key) ? EvictionRank::kPinned : EvictionRank::kLeaf; };
    for (int i = 0; i < 7; ++i) {
      auto victim = policy->Evict(rank);
      ASSERT_TRUE(victim.has_value());
      EXPECT_FALSE(pinned.contains(*victim));
    }
    EXPECT_FALSE(policy->Evict(rank).has_value()) << EvictionPolicyName(kind);
    EXPECT_EQ(policy->size(), 3u);
  }
}

TEST(EvictionPolicy, InnerNodesGoOnlyWhenNothingElseCan) {
  for (auto kind : {EvictionPolicyKind::kLru, EvictionPolicyKind::kS3Fifo}) {
    auto policy = MakeEvictionPolicy(kind);
    for (uint8_t i = 0; i < 4; ++i) policy->Insert(Key(i));
    auto rank = [](const BlockKey& key) { return key == Key(3) ? EvictionRank::kLeaf : EvictionRank::kInnerNode; };
    EXPECT_EQ(policy->Evict(rank), Key(3)) << EvictionPolicyName(kind);
    EXPECT_TRUE(policy->Evict(rank).has_value());  // then an inner node, as a last resort
  }
}

TEST(EvictionPolicy, S3FifoKeepsABlockHitWhileInProbationOverOneHitWonders) {
  auto policy = MakeEvictionPolicy(EvictionPolicyKind::kS3Fifo);
  policy->Insert(Key(0));
  policy->Touch(Key(0));  // hit while in the small queue: promoted to main on its way out
  for (uint8_t i = 1; i < 20; ++i) policy->Insert(Key(i));
  for (int i = 0; i < 10; ++i) EXPECT_NE(policy->Evict(AllLeaves), Key(0));
}

TEST(EvictionPolicy, S3FifoSendsAReturningKeyToTheMainQueue) {
  auto policy = MakeEvictionPolicy(EvictionPolicyKind::kS3Fifo);
  for (uint8_t i = 0; i < 10; ++i) policy->Insert(Key(i));
  EXPECT_EQ(policy->Evict(AllLeaves), Key(0));  // into the ghost queue
  policy->Insert(Key(0));                       // back: straight to main
  for (uint8_t i = 10; i < 30; ++i) policy->Insert(Key(i));
  // One-hit wonders in the small queue go before the main queue's block.
  for (int i = 0; i < 15; ++i) EXPECT_NE(policy->Evict(AllLeaves), Key(0));
}

}  // namespace
}  // namespace strata::kvstore
