// Tier H: bounded by bytes, least recently used first but leaves before their ancestors, every change
// reported to the listener in order.
#include "worker/prefix/host_block_cache.h"

#include <string>

#include "gtest/gtest.h"

namespace strata::worker {
namespace {

BlockKey Key(uint8_t n) {
  BlockKey key;
  key.bytes[0] = n;
  return key;
}

std::shared_ptr<const BlockPayload> Payload(size_t bytes, uint8_t fill) {
  return std::make_shared<const BlockPayload>(bytes, std::byte{fill});
}

struct Recorder {
  std::string log;
  HostCacheListener Listener() {
    return {[this](absl::Span<const BlockKey> keys) {
              for (const BlockKey& k : keys) log.append("+").append(std::to_string(k.bytes[0]));
            },
            [this](absl::Span<const BlockKey> keys) {
              for (const BlockKey& k : keys) log.append("-").append(std::to_string(k.bytes[0]));
            }};
  }
};

TEST(HostBlockCache, LongestPrefixStopsAtTheFirstMissingBlock) {
  Recorder recorder;
  HostBlockCache cache(1000, recorder.Listener());
  cache.Insert({{Key(1), std::nullopt, Payload(100, 1)}, {Key(2), Key(1), Payload(100, 2)}});
  cache.Insert({{Key(4), Key(3), Payload(100, 4)}});
  const auto found = cache.LongestPrefix(std::vector<BlockKey>{Key(1), Key(2), Key(3), Key(4)});
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[1]->data()[0], std::byte{2});
  EXPECT_TRUE(cache.LongestPrefix(std::vector<BlockKey>{Key(2)}).size() == 1);
  EXPECT_TRUE(cache.LongestPrefix(std::vector<BlockKey>{Key(9), Key(1)}).empty());
  EXPECT_EQ(recorder.log, "+1+2+4");
  EXPECT_EQ(cache.bytes(), 300u);
  EXPECT_EQ(cache.blocks(), 3u);
}

TEST(HostBlockCache, EvictsLeavesBeforeTheirAncestors) {
  Recorder recorder;
  HostBlockCache cache(300, recorder.Listener());
  // A chain 1 <- 2 <- 3: 1 is the least recently used, but 3 (a leaf) goes first.
  cache.Insert({{Key(1), std::nullopt, Payload(100, 1)},
                {Key(2), Key(1), Payload(100, 2)},
                {Key(3), Key(2), Payload(100, 3)}});
  cache.Insert({{Key(7), std::nullopt, Payload(100, 7)}});
  EXPECT_EQ(recorder.log, "+1+2+3+7-3");
  EXPECT_EQ(cache.LongestPrefix(std::vector<BlockKey>{Key(1), Key(2), Key(3)}).size(), 2u);
  // Now 2 is a leaf: it goes before 1.
  cache.Insert({{Key(8), std::nullopt, Payload(100, 8)}});
  EXPECT_EQ(recorder.log, "+1+2+3+7-3+8-7");  // 7 was least recently used and a leaf
  cache.Insert({{Key(9), std::nullopt, Payload(100, 9)}});
  EXPECT_EQ(recorder.log, "+1+2+3+7-3+8-7+9-2");
  EXPECT_EQ(cache.bytes(), 300u);
}

TEST(HostBlockCache, ReinsertRefreshesAndOversizedBlocksAreNotCached) {
  Recorder recorder;
  HostBlockCache cache(200, recorder.Listener());
  cache.Insert({{Key(1), std::nullopt, Payload(100, 1)}, {Key(2), std::nullopt, Payload(100, 2)}});
  cache.Insert({{Key(1), std::nullopt, Payload(100, 1)}});  // refresh: 2 is now the oldest
  cache.Insert({{Key(3), std::nullopt, Payload(100, 3)}, {Key(4), std::nullopt, Payload(300, 4)}});
  EXPECT_EQ(recorder.log, "+1+2+3-2");
  EXPECT_EQ(cache.Keys().size(), 2u);
}

TEST(HostBlockCache, AReaderKeepsAnEvictedPayloadAlive) {
  HostBlockCache cache(100, {});
  cache.Insert({{Key(1), std::nullopt, Payload(100, 1)}});
  const auto held = cache.LongestPrefix(std::vector<BlockKey>{Key(1)});
  cache.Insert({{Key(2), std::nullopt, Payload(100, 2)}});
  EXPECT_TRUE(cache.LongestPrefix(std::vector<BlockKey>{Key(1)}).empty());
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0]->data()[99], std::byte{1});
}

}  // namespace
}  // namespace strata::worker
