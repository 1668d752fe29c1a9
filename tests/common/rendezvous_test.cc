#include "common/rendezvous.h"

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace strata {
namespace {

constexpr size_t kKeys = 100'000;

std::vector<BlockKey> RandomKeys(size_t n, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::vector<BlockKey> keys(n);
  for (BlockKey& key : keys) {
    for (uint8_t& b : key.bytes) b = static_cast<uint8_t>(random());
  }
  return keys;
}

std::vector<std::string> Addresses(int n) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) ids.push_back("strata-kvstore-" + std::to_string(i) + ".strata-kvstore.svc:7480");
  return ids;
}

TEST(Rendezvous, PinnedChoicesDoNotDrift) {
  // A contract across processes and builds: these must never change (workers and the scheduler agree).
  EXPECT_EQ(RendezvousHash::Seed(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(RendezvousHash::Seed("127.0.0.1:7480"), 0xb46a6ae95e9e1d3full);
  BlockKey key;
  for (int i = 0; i < 16; ++i) key.bytes[i] = static_cast<uint8_t>(i);
  const RendezvousHash hash({"10.0.0.1:7480", "10.0.0.2:7480", "10.0.0.3:7480"});
  const size_t pinned = hash.Pick(key);
  EXPECT_EQ(pinned, 2u);  // scores 0x07be7c84..., 0x844cb3a8..., 0xeb7ba27a... (computed independently)
  EXPECT_EQ(RendezvousHash::Score(RendezvousHash::Seed("10.0.0.3:7480"), key), 0xeb7ba27a9270c819ull);
  std::vector<uint64_t> scores;
  for (const std::string& id : hash.ids()) scores.push_back(RendezvousHash::Score(RendezvousHash::Seed(id), key));
  EXPECT_EQ(pinned, static_cast<size_t>(std::max_element(scores.begin(), scores.end()) - scores.begin()));
  EXPECT_EQ(RendezvousHash::Score(0, BlockKey{}), 0u);  // splitmix64's finalizer fixes 0
  EXPECT_EQ(RendezvousHash::Score(1, BlockKey{}), 0x5692161d100b05e5ull);
}

TEST(Rendezvous, SpreadsKeysEvenly) {
  const std::vector<BlockKey> keys = RandomKeys(kKeys, 1);
  for (int n : {2, 3, 5, 8}) {
    const RendezvousHash hash(Addresses(n));
    std::vector<size_t> counts(n, 0);
    for (const BlockKey& key : keys) ++counts[hash.Pick(key)];
    const double expected = static_cast<double>(kKeys) / n;
    for (int i = 0; i < n; ++i) {
      // Binomial sd is below 160 here; 3% of the mean is > 6 sd for every n.
      EXPECT_NEAR(static_cast<double>(counts[i]), expected, 0.03 * expected) << "member " << i << " of " << n;
    }
  }
}

TEST(Rendezvous, AddingAMemberMovesAboutOneInNPlusOneKeysAllToIt) {
  const std::vector<BlockKey> keys = RandomKeys(kKeys, 2);
  for (int n : {1, 2, 3, 7}) {
    const std::vector<std::string> before_ids = Addresses(n);
    std::vector<std::string> after_ids = before_ids;
    after_ids.push_back("a-new-kvstore:7480");
    const RendezvousHash before(before_ids), after(after_ids);
    size_t moved = 0;
    for (const BlockKey& key : keys) {
      const size_t was = before.Pick(key), now = after.Pick(key);
      if (before_ids[was] != after_ids[now]) {
        ++moved;
        EXPECT_EQ(now, static_cast<size_t>(n)) << "a key moved between two old members";
      }
    }
    const double fraction = static_cast<double>(moved) / kKeys;
    EXPECT_NEAR(fraction, 1.0 / (n + 1), 0.02) << n << " -> " << n + 1 << " members";
    // Today's `Low64 % N` would have moved n/(n+1) of them.
  }
}

TEST(Rendezvous, RemovingAMemberMovesOnlyItsKeys) {
  const std::vector<BlockKey> keys = RandomKeys(kKeys, 3);
  const std::vector<std::string> ids = Addresses(4);
  const std::vector<std::string> without = {ids[0], ids[1], ids[3]};
  const RendezvousHash all(ids), fewer(without);
  for (const BlockKey& key : keys) {
    const std::string& was = ids[all.Pick(key)];
    if (was != ids[2]) {
      EXPECT_EQ(without[fewer.Pick(key)], was);
    }
  }
}

TEST(Rendezvous, TheOrderOfTheIdsDoesNotMatter) {
  const std::vector<BlockKey> keys = RandomKeys(10'000, 4);
  std::vector<std::string> ids = Addresses(5);
  const RendezvousHash reference(ids);
  std::mt19937_64 random(5);
  for (int round = 0; round < 5; ++round) {
    std::shuffle(ids.begin(), ids.end(), random);
    const RendezvousHash shuffled(ids);
    for (const BlockKey& key : keys) {
      ASSERT_EQ(shuffled.ids()[shuffled.Pick(key)], reference.ids()[reference.Pick(key)]);
    }
  }
}

TEST(Rendezvous, OneMemberTakesEverything) {
  const RendezvousHash hash({"only:7480"});
  for (const BlockKey& key : RandomKeys(100, 6)) EXPECT_EQ(hash.Pick(key), 0u);
}

}  // namespace
}  // namespace strata
