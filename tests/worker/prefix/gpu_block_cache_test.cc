// Tier G: an index over the engine's KV pool. It holds one reference per cached block, finds the
// longest cached run of a prompt's keys, and, when the pool runs short, drops blocks no sequence holds,
// least recently used leaves first; entering blocks are reported, leaving ones too.
#include "worker/prefix/gpu_block_cache.h"

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/cpu_backend.h"

namespace strata::worker {
namespace {

BlockKey Key(uint8_t n) {
  BlockKey key;
  key.bytes[0] = n;
  return key;
}

class GpuBlockCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = engine::CreateCpuBackend({.threads = 1});
    auto pool = engine::KvPool::Create(
        *backend_, {.num_layers = 1, .num_kv_heads = 1, .head_dim = 4, .dtype = DType::kF32, .block_tokens = 2},
        kBlocks);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *std::move(pool);
    cache_ = std::make_unique<GpuBlockCache>(
        *pool_,
        [this](absl::Span<const BlockKey> keys) {
          for (const BlockKey& k : keys) log_.append("+").append(std::to_string(k.bytes[0]));
        },
        [this](absl::Span<const BlockKey> keys) {
          for (const BlockKey& k : keys) log_.append("-").append(std::to_string(k.bytes[0]));
        });
  }

  // A chain of `keys` cached over freshly allocated blocks, which the caller's "sequence" then drops.
  std::vector<int32_t> CacheChain(const std::vector<BlockKey>& keys, std::optional<BlockKey> parent = std::nullopt) {
    auto blocks = pool_->Allocate(static_cast<int64_t>(keys.size()));
    EXPECT_TRUE(blocks.ok()) << blocks.status();
    cache_->Insert(keys, parent, *blocks);
    pool_->Unref(*blocks);
    return *blocks;
  }

  static constexpr int64_t kBlocks = 6;
  std::unique_ptr<engine::Backend> backend_;
  std::unique_ptr<engine::KvPool> pool_;
  std::unique_ptr<GpuBlockCache> cache_;
  std::string log_;
};

TEST_F(GpuBlockCacheTest, LongestPrefixFindsTheCachedRunAndItsBlocks) {
  const std::vector<int32_t> blocks = CacheChain({Key(1), Key(2)});
  CacheChain({Key(4)}, Key(3));
  EXPECT_EQ(cache_->LongestPrefix(std::vector<BlockKey>{Key(1), Key(2), Key(3), Key(4)}), blocks);
  EXPECT_TRUE(cache_->LongestPrefix(std::vector<BlockKey>{Key(3)}).empty());
  EXPECT_EQ(log_, "+1+2+4");
  EXPECT_EQ(cache_->blocks(), 3);
  EXPECT_EQ(pool_->free_blocks(), kBlocks - 3);
}

TEST_F(GpuBlockCacheTest, AKeyCachedTwiceKeepsItsFirstBlock) {
  const std::vector<int32_t> first = CacheChain({Key(1)});
  CacheChain({Key(1)});  // computed again by another sequence: its block goes back to the pool
  EXPECT_EQ(cache_->LongestPrefix(std::vector<BlockKey>{Key(1)}), first);
  EXPECT_EQ(pool_->free_blocks(), kBlocks - 1);
  EXPECT_EQ(log_, "+1");
}

TEST_F(GpuBlockCacheTest, AShortPoolReclaimsLeastRecentlyUsedLeavesFirst) {
  CacheChain({Key(1), Key(2), Key(3)});  // a chain: 3 is the leaf
  CacheChain({Key(7)});                   // a lone block, used more recently than the chain
  // Four cached, two free; five wanted: three must go, leaves first: 3, then 2 (a leaf once 3 went), then 1.
  cache_->LongestPrefix(std::vector<BlockKey>{Key(7)});
  auto taken = pool_->Allocate(5);
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(log_, "+1+2+3+7-3-2-1");
  EXPECT_EQ(cache_->LongestPrefix(std::vector<BlockKey>{Key(7)}).size(), 1u);
  pool_->Unref(*taken);
}

TEST_F(GpuBlockCacheTest, BlocksThatARunningSequenceHoldsAreNeverReclaimed) {
  const std::vector<int32_t> blocks = CacheChain({Key(1), Key(2)});
  pool_->Ref(blocks);  // a sequence attached the prefix
  auto refused = pool_->Allocate(kBlocks - 1);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(log_, "+1+2");
  pool_->Unref(blocks);  // it finished: now they can go
  auto taken = pool_->Allocate(kBlocks);
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_EQ(log_, "+1+2-2-1");
  pool_->Unref(*taken);
}

TEST_F(GpuBlockCacheTest, DestroyingTheCacheGivesItsBlocksBack) {
  CacheChain({Key(1), Key(2)});
  EXPECT_EQ(pool_->free_blocks(), kBlocks - 2);
  cache_.reset();
  EXPECT_EQ(pool_->free_blocks(), kBlocks);
}

}  // namespace
}  // namespace strata::worker
