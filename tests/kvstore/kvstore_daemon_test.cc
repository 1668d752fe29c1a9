// strata-kvstore as a process on loopback with real UCX (the transport UCX picks, or UCX_TLS from the
// environment: ctest runs this suite twice, once with UCX_TLS=tcp) and a real RocksDB in a temp dir.
#include <grpcpp/generic/generic_stub.h>
#include <httplib.h>
#include <signal.h>
#include <xxhash.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "common/rpc.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/checksum.h"
#include "tests/kvstore/test_util.h"
#include "tests/testing/metrics_scrape.h"

namespace strata::kvstore::testing {
namespace {

constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;

std::vector<BlockKey> Keys(uint64_t seed, int count) {
  std::vector<BlockKey> keys;
  for (int i = 0; i < count; ++i) keys.push_back(RandomKey(seed * 1'000'003 + i));
  return keys;
}

std::unique_ptr<DaemonProcess> StartDaemon(std::vector<std::string> args) {
  absl::StatusOr<std::unique_ptr<DaemonProcess>> daemon = DaemonProcess::Start(std::move(args));
  EXPECT_TRUE(daemon.ok()) << daemon.status();
  return daemon.ok() ? std::move(*daemon) : nullptr;
}

std::unique_ptr<KvStoreClient> ConnectTo(const DaemonProcess& daemon) {
  absl::StatusOr<std::unique_ptr<KvStoreClient>> client = daemon.Connect();
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

TEST(RoundTrip, PutThenGetReturnsEveryByte) {
  auto daemon = StartDaemon({"--dram-bytes", "256MiB"});  // sizes take units
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  RegisteredBuffer buffer(*client, 96 * kMiB);
  const std::vector<BlockKey> keys = Keys(1, 48);
  PutKeys(*client, buffer, keys, 1, 2 * kMiB);
  const std::vector<GetOutcome> outcomes = GetAndCheck(*client, buffer, keys, 2 * kMiB);
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_TRUE(outcomes[i].found) << i;
    EXPECT_EQ(outcomes[i].tier, proto::TIER_KVSTORE_DRAM);
    EXPECT_EQ(outcomes[i].size_bytes, SizeForKey(keys[i], 1, 2 * kMiB));
  }
  const proto::StatsResponse stats = StatsOf(*client);
  EXPECT_EQ(TierOf(stats, proto::TIER_KVSTORE_DRAM).capacity_bytes(), 256 * kMiB);
  EXPECT_EQ(TierOf(stats, proto::TIER_KVSTORE_DRAM).blocks(), keys.size());
  EXPECT_EQ(TierOf(stats, proto::TIER_KVSTORE_DRAM).hits(), keys.size());
  EXPECT_EQ(stats.pinned_bytes(), 0u);
  EXPECT_EQ(stats.open_leases(), 0u);
  // Delete everything: the arena is empty again.
  absl::StatusOr<uint32_t> deleted = client->Delete(keys);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, keys.size());
  EXPECT_EQ(StatsOf(*client).arena_allocated_bytes(), 0u);
  EXPECT_EQ(daemon->Terminate(), 0);
}

TEST(Checksum, BlockChecksumIsXxh3OfLibxxhashAtEverySizeAndAlignment) {
  // BlockChecksum may run xxHash's AVX2 code; it must give libxxhash's XXH3_64bits value bit for bit.
  std::vector<uint8_t> bytes(3 * kMiB + 77);
  std::mt19937_64 random(5);
  for (uint8_t& byte : bytes) byte = static_cast<uint8_t>(random());
  for (size_t size : {size_t{0}, size_t{1}, size_t{16}, size_t{17}, size_t{128}, size_t{129}, size_t{240},
                      size_t{241}, size_t{1024}, size_t{4096} + 3, size_t{65536}, size_t{2 * kMiB}, size_t{3 * kMiB}}) {
    for (size_t offset : {size_t{0}, size_t{1}, size_t{7}, size_t{64}}) {
      EXPECT_EQ(BlockChecksum(bytes.data() + offset, size), XXH3_64bits(bytes.data() + offset, size))
          << size << " bytes at +" << offset;
    }
  }
}

TEST(RoundTrip, CallsFromSeveralThreadsOnOneClientOverlapAndReturnEveryByte) {
  // Threads sharing one client (a window of calls in flight): their round trips overlap, the RMA runs
  // one at a time; every byte comes back, and the client's Stats sees every lease ended.
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(128 * kMiB)});
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  constexpr int kThreads = 4, kBlocks = 12;
  constexpr uint64_t kBlockBytes = 1 * kMiB + 4096 + 13;
  RegisteredBuffer buffer(*client, kThreads * 2 * kBlockBytes);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      uint8_t* out = buffer.data() + t * 2 * kBlockBytes;
      uint8_t* in = out + kBlockBytes;
      std::vector<uint8_t> expected(kBlockBytes);
      for (const BlockKey& key : Keys(100 + t, kBlocks)) {
        FillForKey(key, out, kBlockBytes);
        std::memcpy(expected.data(), out, kBlockBytes);
        absl::StatusOr<std::vector<PutOutcome>> put = client->Put({{key, out, kBlockBytes}});
        if (!put.ok() || (*put)[0] != PutOutcome::kStored) ++wrong;
        std::memset(in, 0, kBlockBytes);
        absl::StatusOr<std::vector<GetOutcome>> got = client->Get({{key, in, kBlockBytes}});
        if (!got.ok() || !(*got)[0].found || std::memcmp(in, expected.data(), kBlockBytes) != 0) ++wrong;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
  const proto::StatsResponse stats = StatsOf(*client);
  EXPECT_EQ(TierOf(stats, proto::TIER_KVSTORE_DRAM).blocks(), uint64_t{kThreads * kBlocks});
  EXPECT_EQ(stats.open_leases(), 0u);
  EXPECT_EQ(stats.pinned_bytes(), 0u);
  EXPECT_EQ(stats.open_puts(), 0u);
  EXPECT_EQ(daemon->Terminate(), 0);
}

TEST(RoundTrip, LargeBlocksAreReadAndCheckedInChunksAndReturnEveryByte) {
  // Blocks above the client's 2 MiB chunk are read and hashed chunk by chunk; sizes around the chunk
  // boundaries, in one batch with a small block (read whole).
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(128 * kMiB)});
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  const std::vector<uint64_t> sizes = {2 * kMiB + 1, 7 * kMiB + 13, 4096, 4 * kMiB, 9 * kMiB - 1};
  uint64_t total = 0;
  for (uint64_t size : sizes) total += size;
  RegisteredBuffer out(*client, total), in(*client, total);
  const std::vector<BlockKey> keys = Keys(200, static_cast<int>(sizes.size()));
  std::vector<PutBlock> puts;
  std::vector<GetBlock> gets;
  uint64_t offset = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    FillForKey(keys[i], out.data() + offset, sizes[i]);
    puts.push_back({keys[i], out.data() + offset, sizes[i]});
    gets.push_back({keys[i], in.data() + offset, sizes[i]});
    offset += sizes[i];
  }
  absl::StatusOr<std::vector<PutOutcome>> put = client->Put(puts);
  ASSERT_TRUE(put.ok()) << put.status();
  std::memset(in.data(), 0, total);
  absl::StatusOr<std::vector<GetOutcome>> got = client->Get(gets);
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_TRUE((*got)[i].found) << i;
    EXPECT_EQ((*got)[i].size_bytes, sizes[i]);
  }
  EXPECT_EQ(std::memcmp(in.data(), out.data(), total), 0);
  EXPECT_EQ(StatsOf(*client).open_leases(), 0u);
  EXPECT_EQ(daemon->Terminate(), 0);
}

TEST(RoundTrip, SecondPutOfAKeyIsAlreadyPresentAndKeepsTheFirstBytes) {
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(64 * kMiB)});
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  RegisteredBuffer buffer(*client, 4 * kMiB);
  const BlockKey key = RandomKey(7);
  FillForKey(key, buffer.data(), 1 * kMiB);
  auto first = client->Put({{key, buffer.data(), 1 * kMiB}});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*first)[0], PutOutcome::kStored);
  std::memset(buffer.data(), 0x55, 1 * kMiB);
  auto second = client->Put({{key, buffer.data(), 1 * kMiB}});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ((*second)[0], PutOutcome::kAlreadyPresent);
  auto got = client->Get({{key, buffer.data() + 2 * kMiB, 2 * kMiB}});
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE((*got)[0].found);
  EXPECT_TRUE(MatchesKey(key, buffer.data() + 2 * kMiB, 1 * kMiB));
}

TEST(RoundTrip, LookupReportsTiersSizesAndTheLongestPresentPrefix) {
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(64 * kMiB)});
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  RegisteredBuffer buffer(*client, 16 * kMiB);
  const std::vector<BlockKey> chain = Keys(11, 6);
  PutKeys(*client, buffer, {chain[0], chain[1], chain[2], chain[4]}, 4 * kKiB, 64 * kKiB);
  auto lookup = client->Lookup(chain);
  ASSERT_TRUE(lookup.ok()) << lookup.status();
  EXPECT_EQ(lookup->longest_present_prefix(), 3u);
  ASSERT_EQ(lookup->blocks_size(), 6);
  EXPECT_TRUE(lookup->blocks(4).present());
  EXPECT_FALSE(lookup->blocks(3).present());
  EXPECT_EQ(lookup->blocks(0).tier(), proto::TIER_KVSTORE_DRAM);
  EXPECT_EQ(lookup->blocks(0).size_bytes(), SizeForKey(chain[0], 4 * kKiB, 64 * kKiB));
}

TEST(RoundTrip, AsyncBatchesOverlap) {
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(128 * kMiB)});
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  RegisteredBuffer in(*client, 32 * kMiB), out(*client, 32 * kMiB);
  const std::vector<BlockKey> keys = Keys(12, 16);
  std::vector<PutBlock> puts;
  std::vector<GetBlock> gets;
  for (size_t i = 0; i < keys.size(); ++i) {
    FillForKey(keys[i], in.data() + i * 2 * kMiB, 2 * kMiB);
    puts.push_back({keys[i], in.data() + i * 2 * kMiB, 2 * kMiB});
    gets.push_back({keys[i], out.data() + i * 2 * kMiB, 2 * kMiB});
  }
  auto put = client->PutAsync(puts);
  ASSERT_TRUE(put.get().ok());
  auto get = client->GetAsync(gets);
  auto outcomes = get.get();
  ASSERT_TRUE(outcomes.ok()) << outcomes.status();
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_TRUE((*outcomes)[i].found);
    EXPECT_TRUE(MatchesKey(keys[i], out.data() + i * 2 * kMiB, 2 * kMiB));
  }
}

// 8 clients (threads, each its own client and UCX worker) × 600 mixed operations on a shared key space;
// every block read is checked byte by byte against its key.
TEST(Concurrency, EightClientsMixedOperationsEveryByteChecked) {
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(48 * kMiB), "--max-batch", "64"});
  ASSERT_NE(daemon, nullptr);
  constexpr int kClients = 8, kOps = 600, kKeySpace = 400;
  constexpr uint64_t kMin = 1, kMax = 256 * kKiB;
  const std::vector<BlockKey> keys = Keys(21, kKeySpace);
  std::atomic<int> found{0}, failures{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      auto client = ConnectTo(*daemon);
      if (client == nullptr) {
        ++failures;
        return;
      }
      RegisteredBuffer buffer(*client, 4 * kMax);
      std::mt19937_64 random(c);
      for (int op = 0; op < kOps; ++op) {
        std::vector<BlockKey> batch;
        const int n = 1 + random() % 4;
        absl::flat_hash_set<BlockKey> seen;
        while (static_cast<int>(batch.size()) < n) {
          const BlockKey& key = keys[random() % kKeySpace];
          if (seen.insert(key).second) batch.push_back(key);
        }
        const int kind = random() % 10;
        if (kind < 4) {
          std::vector<PutBlock> puts;
          for (size_t i = 0; i < batch.size(); ++i) {
            const uint64_t size = SizeForKey(batch[i], kMin, kMax);
            FillForKey(batch[i], buffer.data() + i * kMax, size);
            puts.push_back({batch[i], buffer.data() + i * kMax, size});
          }
          auto result = client->Put(puts);
          if (!result.ok() && result.status().code() != absl::StatusCode::kResourceExhausted) {
            ADD_FAILURE() << result.status();
            ++failures;
          }
        } else if (kind < 9) {
          std::vector<GetBlock> gets;
          for (size_t i = 0; i < batch.size(); ++i) {
            std::memset(buffer.data() + i * kMax, 0xEE, kMax);
            gets.push_back({batch[i], buffer.data() + i * kMax, kMax});
          }
          auto result = client->Get(gets);
          if (!result.ok()) {
            ADD_FAILURE() << result.status();
            ++failures;
            continue;
          }
          for (size_t i = 0; i < batch.size(); ++i) {
            if (!(*result)[i].found) continue;
            ++found;
            if ((*result)[i].size_bytes != SizeForKey(batch[i], kMin, kMax) ||
                !MatchesKey(batch[i], buffer.data() + i * kMax, (*result)[i].size_bytes)) {
              ADD_FAILURE() << "wrong bytes for " << batch[i].Hex();
              ++failures;
            }
          }
        } else {
          auto result = client->Delete(batch);
          if (!result.ok()) {
            ADD_FAILURE() << result.status();
            ++failures;
          }
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(found.load(), 500);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  const proto::StatsResponse stats = StatsOf(*client);
  EXPECT_EQ(stats.open_leases(), 0u);
  EXPECT_EQ(stats.open_puts(), 0u);
  EXPECT_EQ(stats.pinned_bytes(), 0u);
  EXPECT_EQ(stats.reserved_bytes(), 0u);
  ASSERT_TRUE(client->Delete(keys).ok());
  EXPECT_EQ(StatsOf(*client).arena_allocated_bytes(), 0u);
  EXPECT_EQ(daemon->Terminate(), 0);
}

TEST(Tiers, DramEvictionWritesBackToSsdAndAGetPromotes) {
  ScratchDir ssd = MakeTempDir("strata-kvstore-ssd");
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(8 * kMiB), "--ssd-dir", ssd.path().string()});
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  RegisteredBuffer buffer(*client, 4 * kMiB);
  const std::vector<BlockKey> keys = Keys(31, 24);  // 24 MiB through an 8 MiB arena
  PutKeys(*client, buffer, keys, 1 * kMiB, 1 * kMiB);
  proto::StatsResponse stats = StatsOf(*client);
  EXPECT_GE(TierOf(stats, proto::TIER_KVSTORE_DRAM).evictions(), 16u);
  EXPECT_GE(TierOf(stats, proto::TIER_KVSTORE_SSD).blocks(), 16u);
  auto lookup = client->Lookup(keys);
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->longest_present_prefix(), keys.size());  // nothing lost
  EXPECT_EQ(lookup->blocks(0).tier(), proto::TIER_KVSTORE_SSD);
  // Read them all back (2 at a time): SSD blocks come back promoted and intact.
  int from_ssd = 0;
  for (size_t i = 0; i < keys.size(); i += 2) {
    const auto outcomes = GetAndCheck(*client, buffer, {keys[i], keys[i + 1]}, 1 * kMiB);
    for (const GetOutcome& outcome : outcomes) {
      EXPECT_TRUE(outcome.found);
      from_ssd += outcome.tier == proto::TIER_KVSTORE_SSD;
    }
  }
  EXPECT_GE(from_ssd, 16);
  stats = StatsOf(*client);
  EXPECT_EQ(TierOf(stats, proto::TIER_KVSTORE_SSD).hits(), static_cast<uint64_t>(from_ssd));
  lookup = client->Lookup({keys.back()});
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->blocks(0).tier(), proto::TIER_KVSTORE_DRAM);  // promoted
  EXPECT_EQ(stats.checksum_failures(), 0u);
}

TEST(Tiers, AFullSsdTierDropsItsLeastRecentlyUsedBlocks) {
  ScratchDir ssd = MakeTempDir("strata-kvstore-ssd");
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(4 * kMiB), "--ssd-dir", ssd.path().string(), "--ssd-bytes",
                             std::to_string(8 * kMiB), "--eviction", "lru"});
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  RegisteredBuffer buffer(*client, 1 * kMiB);
  const std::vector<BlockKey> keys = Keys(34, 20);  // 20 MiB through 4 MiB of DRAM and 8 MiB of SSD
  for (const BlockKey& key : keys) PutKeys(*client, buffer, {key}, 1 * kMiB, 1 * kMiB);
  const proto::StatsResponse stats = StatsOf(*client);
  const proto::TierStats ssd_tier = TierOf(stats, proto::TIER_KVSTORE_SSD);
  EXPECT_LE(ssd_tier.used_bytes(), 8 * kMiB);
  EXPECT_EQ(ssd_tier.capacity_bytes(), 8 * kMiB);
  EXPECT_GE(ssd_tier.evictions(), 8u);
  // The newest 12 survive (4 in DRAM, 8 on SSD); the oldest are gone.
  auto lookup = client->Lookup(keys);
  ASSERT_TRUE(lookup.ok());
  for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ(lookup->blocks(static_cast<int>(i)).present(), i >= 8) << i;
  // Intact: the DRAM ones, then the newest SSD one (promoting it pushes a DRAM block to SSD, which then
  // drops the least recently used SSD-only block: reading all 12 in order would thrash, by design).
  const std::vector<BlockKey> newest = {keys[16], keys[17], keys[18], keys[19], keys[15]};
  for (const GetOutcome& outcome : GetAndCheck(*client, buffer, newest, 1 * kMiB)) EXPECT_TRUE(outcome.found);
  EXPECT_EQ(TierOf(StatsOf(*client), proto::TIER_KVSTORE_SSD).hits(), 1u);
}

// Leaves first on SSD too: the oldest block stays while a child of it is cached (plain LRU would drop it
// first, stranding the child), and unrelated leaves go instead.
TEST(Tiers, AFullSsdTierDropsLeavesBeforeABlockWhoseChildIsCached) {
  ScratchDir ssd = MakeTempDir("strata-kvstore-ssd");
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(4 * kMiB), "--ssd-dir", ssd.path().string(), "--ssd-bytes",
                             std::to_string(8 * kMiB), "--eviction", "lru"});
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  RegisteredBuffer buffer(*client, 1 * kMiB);
  const std::vector<BlockKey> chain = Keys(35, 2), others = Keys(36, 18);
  std::memset(buffer.data(), 7, 1 * kMiB);
  ASSERT_TRUE(client->Put({{chain[0], buffer.data(), 1 * kMiB, std::nullopt}}).ok());
  ASSERT_TRUE(client->Put({{chain[1], buffer.data(), 1 * kMiB, chain[0]}}).ok());
  for (size_t i = 0; i < others.size(); ++i) {
    if (i % 3 == 2) {  // the child is read again and again: recently used, unlike its parent
      GetBlock get{chain[1], buffer.data(), 1 * kMiB};
      auto got = client->Get({&get, 1});
      ASSERT_TRUE(got.ok() && (*got)[0].found) << "the child should still be cached";
    }
    PutKeys(*client, buffer, {others[i]}, 1 * kMiB, 1 * kMiB);
  }
  EXPECT_GE(TierOf(StatsOf(*client), proto::TIER_KVSTORE_SSD).evictions(), 6u);
  auto lookup = client->Lookup(chain);
  ASSERT_TRUE(lookup.ok());
  EXPECT_TRUE(lookup->blocks(0).present()) << "the least recently used block went although its child is cached";
  EXPECT_TRUE(lookup->blocks(1).present());
}

TEST(Tiers, WithoutAnSsdTierEvictedBlocksAreMisses) {
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(4 * kMiB), "--eviction", "lru"});
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  RegisteredBuffer buffer(*client, 4 * kMiB);
  const std::vector<BlockKey> keys = Keys(32, 12);
  PutKeys(*client, buffer, keys, 1 * kMiB, 1 * kMiB);
  const auto outcomes = GetAndCheck(*client, buffer, keys, 1 * kMiB);
  int found = 0;
  for (const GetOutcome& outcome : outcomes) found += outcome.found;
  EXPECT_EQ(found, 4);  // LRU keeps the last four
  EXPECT_TRUE(outcomes.back().found);
  EXPECT_FALSE(outcomes.front().found);
}

TEST(Tiers, EvictionPrefersLeavesOfChainsWhenParentsAreGiven) {
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(4 * kMiB), "--eviction", "lru"});
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  RegisteredBuffer buffer(*client, 4 * kMiB);
  // A chain root -> a -> b written first (oldest), then an unrelated block: room for 4 blocks of 1 MiB.
  const std::vector<BlockKey> keys = Keys(33, 5);
  for (int i = 0; i < 4; ++i) {
    FillForKey(keys[i], buffer.data(), 1 * kMiB);
    std::optional<BlockKey> parent;
    if (i > 0 && i < 3) parent = keys[i - 1];
    ASSERT_TRUE(client->Put({{keys[i], buffer.data(), 1 * kMiB, parent}}).ok());
  }
  // A fifth block evicts one: LRU alone would pick the chain root keys[0]; leaves-first picks the
  // chain's leaf keys[2] (the oldest block without children in DRAM).
  FillForKey(keys[4], buffer.data(), 1 * kMiB);
  ASSERT_TRUE(client->Put({{keys[4], buffer.data(), 1 * kMiB}}).ok());
  auto lookup = client->Lookup(keys);
  ASSERT_TRUE(lookup.ok());
  EXPECT_TRUE(lookup->blocks(0).present());
  EXPECT_TRUE(lookup->blocks(1).present());
  EXPECT_FALSE(lookup->blocks(2).present());
  EXPECT_TRUE(lookup->blocks(3).present());
}

// The crash contract (kvstore/ssd_tier.h): a block on SSD is durable once a sync that began after it got
// there has completed (kvstore_durability_test covers the blocks not yet synced).
TEST(Durability, KillNineKeepsEveryBlockSyncedToSsd) {
  ScratchDir ssd = MakeTempDir("strata-kvstore-ssd");
  const std::vector<std::string> args = {"--dram-bytes", std::to_string(8 * kMiB), "--ssd-dir", ssd.path().string(),
                                         "--ssd-sync-ms", "50"};
  auto daemon = StartDaemon(args);
  ASSERT_NE(daemon, nullptr);
  const std::vector<BlockKey> keys = Keys(41, 20);
  std::vector<BlockKey> on_ssd;
  {
    auto client = ConnectTo(*daemon);
    ASSERT_NE(client, nullptr);
    RegisteredBuffer buffer(*client, 4 * kMiB);
    PutKeys(*client, buffer, keys, 512 * kKiB, 1 * kMiB);
    auto lookup = client->Lookup(keys);
    ASSERT_TRUE(lookup.ok());
    for (size_t i = 0; i < keys.size(); ++i) {
      if (lookup->blocks(i).tier() == proto::TIER_KVSTORE_SSD) on_ssd.push_back(keys[i]);
    }
  }
  ASSERT_GE(on_ssd.size(), 8u);
  auto syncs = [&] {
    return strata::testing::MetricValue(daemon->metrics_port(), "strata_kvstore_ssd_syncs_total").value_or(0);
  };
  const double syncs_before = syncs();
  ASSERT_TRUE(WaitFor([&] { return syncs() >= syncs_before + 2; }, std::chrono::seconds(10)));
  daemon->Kill();
  daemon = StartDaemon(args);
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  RegisteredBuffer buffer(*client, 4 * kMiB);
  EXPECT_GE(TierOf(StatsOf(*client), proto::TIER_KVSTORE_SSD).blocks(), on_ssd.size());
  for (const BlockKey& key : on_ssd) {
    const auto outcomes = GetAndCheck(*client, buffer, {key}, 1 * kMiB);
    EXPECT_TRUE(outcomes[0].found) << key.Hex();
  }
}

TEST(Durability, WriteThroughKeepsEveryCommittedBlockAcrossKillNine) {
  ScratchDir ssd = MakeTempDir("strata-kvstore-ssd");
  const std::vector<std::string> args = {
      "--dram-bytes", std::to_string(32 * kMiB), "--ssd-dir", ssd.path().string(), "--persist", "write-through"};
  auto daemon = StartDaemon(args);
  ASSERT_NE(daemon, nullptr);
  const std::vector<BlockKey> keys = Keys(42, 24);
  {
    auto client = ConnectTo(*daemon);
    ASSERT_NE(client, nullptr);
    RegisteredBuffer buffer(*client, 8 * kMiB);
    PutKeys(*client, buffer, keys, 1, 1 * kMiB);
  }
  daemon->Kill();
  daemon = StartDaemon(args);
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  RegisteredBuffer buffer(*client, 8 * kMiB);
  const auto outcomes = GetAndCheck(*client, buffer, keys, 1 * kMiB);
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_TRUE(outcomes[i].found) << i;
    EXPECT_EQ(outcomes[i].tier, proto::TIER_KVSTORE_SSD);
  }
}

TEST(Leases, AnExpiredLeaseUnpinsItsBlocks) {
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(16 * kMiB), "--lease-ttl-ms", "300"});
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  RegisteredBuffer buffer(*client, 4 * kMiB);
  const std::vector<BlockKey> keys = Keys(51, 3);
  PutKeys(*client, buffer, keys, 1 * kMiB, 1 * kMiB);
  // A reader that pins and then disappears without EndGet.
  auto stub = RawStub(*daemon);
  proto::BeginGetRequest begin;
  for (const BlockKey& key : keys) begin.add_keys(key.ToBytes());
  proto::BeginGetResponse lease;
  grpc::ClientContext context;
  SetDeadline(context, std::chrono::seconds(5));
  ASSERT_TRUE(stub->BeginGet(&context, begin, &lease).ok());
  EXPECT_EQ(StatsOf(*client).pinned_bytes(), 3 * kMiB);
  EXPECT_TRUE(WaitFor([&] { return StatsOf(*client).pinned_bytes() == 0; }, std::chrono::seconds(10)));
  const proto::StatsResponse stats = StatsOf(*client);
  EXPECT_EQ(stats.open_leases(), 0u);
  EXPECT_EQ(stats.expired_leases(), 1u);
  grpc::ClientContext end_context;
  SetDeadline(end_context, std::chrono::seconds(5));
  proto::EndGetRequest end;
  end.set_lease_id(lease.lease_id());
  proto::EndGetResponse ended;
  EXPECT_EQ(stub->EndGet(&end_context, end, &ended).error_code(), grpc::StatusCode::NOT_FOUND);
  // Unpinned blocks can be deleted and their memory is free.
  ASSERT_TRUE(client->Delete(keys).ok());
  EXPECT_EQ(StatsOf(*client).arena_allocated_bytes(), 0u);
}

TEST(Leases, RenewingKeepsBlocksPinnedPastTheTtl) {
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(16 * kMiB), "--lease-ttl-ms", "300"});
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  RegisteredBuffer buffer(*client, 1 * kMiB);
  const BlockKey key = RandomKey(53);
  PutKeys(*client, buffer, {key}, 1 * kMiB, 1 * kMiB);
  auto stub = RawStub(*daemon);
  proto::BeginGetRequest begin;
  begin.add_keys(key.ToBytes());
  proto::BeginGetResponse lease;
  {
    grpc::ClientContext context;
    SetDeadline(context, std::chrono::seconds(5));
    ASSERT_TRUE(stub->BeginGet(&context, begin, &lease).ok());
  }
  // Renew every ~100 ms for four TTLs: the pin holds throughout.
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1200);
  while (std::chrono::steady_clock::now() < until) {
    grpc::ClientContext context;
    SetDeadline(context, std::chrono::seconds(5));
    proto::RenewLeaseRequest renew;
    renew.set_lease_id(lease.lease_id());
    proto::RenewLeaseResponse renewed;
    ASSERT_TRUE(stub->RenewLease(&context, renew, &renewed).ok());
    EXPECT_EQ(StatsOf(*client).pinned_bytes(), 1 * kMiB);
    WaitFor([] { return false; }, std::chrono::milliseconds(100));  // pacing between renewals
  }
  EXPECT_EQ(StatsOf(*client).expired_leases(), 0u);
  // Then it lapses.
  EXPECT_TRUE(WaitFor([&] { return StatsOf(*client).pinned_bytes() == 0; }, std::chrono::seconds(10)));
  EXPECT_EQ(StatsOf(*client).expired_leases(), 1u);
}

TEST(Leases, AnAbandonedPutIsFreed) {
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(16 * kMiB), "--put-ttl-ms", "300"});
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  auto stub = RawStub(*daemon);
  proto::BeginPutRequest begin;
  const BlockKey key = RandomKey(52);
  proto::PutItem* item = begin.add_items();
  item->set_key(key.ToBytes());
  item->set_size_bytes(3 * kMiB);
  proto::BeginPutResponse reservation;
  grpc::ClientContext context;
  SetDeadline(context, std::chrono::seconds(5));
  ASSERT_TRUE(stub->BeginPut(&context, begin, &reservation).ok());
  ASSERT_TRUE(reservation.slots(0).reserved());
  EXPECT_EQ(StatsOf(*client).reserved_bytes(), 3 * kMiB);
  auto lookup = client->Lookup({key});
  ASSERT_TRUE(lookup.ok());
  EXPECT_FALSE(lookup->blocks(0).present());  // reserved is not published
  EXPECT_TRUE(WaitFor([&] { return StatsOf(*client).arena_allocated_bytes() == 0; }, std::chrono::seconds(10)));
  EXPECT_EQ(StatsOf(*client).expired_puts(), 1u);
  grpc::ClientContext commit_context;
  SetDeadline(commit_context, std::chrono::seconds(5));
  proto::CommitPutRequest commit;
  commit.set_put_id(reservation.put_id());
  commit.add_checksums(0);
  proto::CommitPutResponse committed;
  EXPECT_EQ(stub->CommitPut(&commit_context, commit, &committed).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(DeadPeer, AClientCallFailsInsteadOfHangingWhenTheDaemonDies) {
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(16 * kMiB)});
  ASSERT_NE(daemon, nullptr);
  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  RegisteredBuffer buffer(*client, 4 * kMiB);
  const std::vector<BlockKey> keys = Keys(61, 2);
  PutKeys(*client, buffer, keys, 1 * kMiB, 1 * kMiB);
  daemon->Kill();
  const auto start = std::chrono::steady_clock::now();
  auto result = client->Get({{keys[0], buffer.data(), 1 * kMiB}});
  EXPECT_FALSE(result.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

// The daemon dies while a large batch is being read: the call returns (an error, or blocks that passed
// their checksum if the transfer won the race), it never hangs and never returns unchecked bytes.
TEST(DeadPeer, ADaemonKilledMidTransferNeverHangsTheClient) {
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(160 * kMiB)});
  ASSERT_NE(daemon, nullptr);
  auto connected = daemon->Connect(std::chrono::seconds(3));
  ASSERT_TRUE(connected.ok()) << connected.status();
  std::unique_ptr<KvStoreClient> client = std::move(*connected);
  RegisteredBuffer buffer(*client, 128 * kMiB);
  const std::vector<BlockKey> keys = Keys(62, 16);
  PutKeys(*client, buffer, keys, 8 * kMiB, 8 * kMiB);
  auto stub = RawStub(*daemon);
  std::thread killer([&] {
    WaitFor(
        [&] {
          grpc::ClientContext context;
          SetDeadline(context, std::chrono::seconds(1));
          proto::StatsResponse stats;
          return !stub->Stats(&context, proto::StatsRequest(), &stats).ok() || stats.pinned_bytes() > 0;
        },
        std::chrono::seconds(10));
    kill(daemon->pid(), SIGKILL);
  });
  std::vector<GetBlock> gets;
  for (size_t i = 0; i < keys.size(); ++i) {
    std::memset(buffer.data() + i * 8 * kMiB, 0xEE, 8 * kMiB);
    gets.push_back({keys[i], buffer.data() + i * 8 * kMiB, 8 * kMiB});
  }
  const auto start = std::chrono::steady_clock::now();
  auto result = client->Get(gets);
  killer.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));  // 3 s timeout + 1 s give-up
  if (result.ok()) {
    for (size_t i = 0; i < keys.size(); ++i) {
      if ((*result)[i].found) {
        EXPECT_TRUE(MatchesKey(keys[i], buffer.data() + i * 8 * kMiB, 8 * kMiB));
      }
    }
  }
  auto after = client->Get({gets[0]});
  EXPECT_FALSE(after.ok());
  daemon->Kill();
}

TEST(Daemon, ServesHealthAndMetricsAndDrainsOnSigterm) {
  auto daemon = StartDaemon({"--dram-bytes", std::to_string(16 * kMiB)});
  ASSERT_NE(daemon, nullptr);
  // grpc.health.v1.Health/Check with an empty request: SERVING is field 1 = 1 (bytes 08 01).
  auto channel = grpc::CreateChannel(daemon->address(), grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  grpc::ClientContext context;
  SetDeadline(context, std::chrono::seconds(5));
  grpc::CompletionQueue queue;
  grpc::ByteBuffer request, response;
  grpc::Slice empty("");
  request = grpc::ByteBuffer(&empty, 1);
  auto call = generic.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &queue);
  call->StartCall();
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(queue.Next(&tag, &ok));
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }

  auto client = ConnectTo(*daemon);
  ASSERT_NE(client, nullptr);
  RegisteredBuffer buffer(*client, 2 * kMiB);
  PutKeys(*client, buffer, Keys(71, 2), 1 * kMiB, 1 * kMiB);
  GetAndCheck(*client, buffer, Keys(71, 3), 1 * kMiB);
  httplib::Client http("127.0.0.1", daemon->metrics_port());
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_THAT(metrics->body, ::testing::HasSubstr("strata_kvstore_hits_total{tier=\"dram\"} 2"));
  EXPECT_THAT(metrics->body, ::testing::HasSubstr("strata_kvstore_misses_total{tier=\"dram\"} 1"));
  EXPECT_THAT(metrics->body, ::testing::HasSubstr("strata_kvstore_occupancy_bytes{tier=\"dram\"} 2097152"));
  EXPECT_THAT(metrics->body, ::testing::HasSubstr("strata_kvstore_op_seconds_bucket{op=\"begin_get\""));
  EXPECT_EQ(http.Get("/healthz")->status, 200);
  EXPECT_EQ(daemon->Terminate(), 0);
}

}  // namespace
}  // namespace strata::kvstore::testing
