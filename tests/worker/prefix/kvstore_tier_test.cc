// KvStoreTier's write-back against a real strata-kvstore process: what reaches the daemon, what is counted
// and what is logged when a batch repeats a key or the daemon refuses a put; a block whose MAC does not
// verify (forged through a plain client, or another worker's key) is a miss, counted and deleted.
#include "worker/prefix/kvstore_tier.h"

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kvstore/daemon_process.h"

namespace strata::worker {
namespace {

using kvstore::testing::DaemonProcess;
using kvstore::testing::RandomKey;

constexpr uint64_t kBlockBytes = 8192;

// A block payload on the heap (its trailer zero: Tier::Sealed signs one).
std::shared_ptr<const BlockPayload> Payload(uint8_t fill) {
  return std::make_shared<const BlockPayload>(kBlockBytes, std::byte{fill});
}

struct Tier {
  MetricsRegistry registry;
  std::shared_ptr<const BlockMac> mac = std::make_shared<const BlockMac>(BlockMac::Generate());
  KvStoreTierMetrics metrics{
      .fetch_failures = &registry.AddCounter("fetch_failures_total", "test"),
      .mac_failures = &registry.AddCounter("mac_failures_total", "test"),
      .fetched_blocks = &registry.AddCounter("fetched_blocks_total", "test"),
      .written_blocks = &registry.AddCounter("written_blocks_total", "test"),
      .write_failures = &registry.AddCounter("write_failures_total", "test"),
      .fetch_seconds = nullptr,
  };
  std::unique_ptr<KvStoreTier> tier;

  // `payloads`: the pool to share (null: the tier's own, of 4 MiB).
  explicit Tier(const std::string& address, std::shared_ptr<PayloadPool> payloads = nullptr) {
    KvStoreTierOptions options;
    options.addresses = {address};
    options.block_bytes = kBlockBytes;
    options.mac = mac;
    options.staging_bytes = 4 << 20;
    options.payloads = std::move(payloads);
    absl::StatusOr<std::unique_ptr<KvStoreTier>> created = KvStoreTier::Create(options, metrics);
    EXPECT_TRUE(created.ok()) << created.status();
    if (created.ok()) tier = *std::move(created);
  }

  // A payload of `fill` signed for `key` with this tier's MAC key, as PrefixCache hands them over.
  std::shared_ptr<const BlockPayload> Sealed(const BlockKey& key, uint8_t fill) const {
    auto payload = std::make_shared<BlockPayload>(kBlockBytes, std::byte{fill});
    mac->Seal(key, payload->bytes(), payload->trailer());
    return payload;
  }

  std::vector<std::shared_ptr<const BlockPayload>> Fetch(std::vector<BlockKey> keys) {
    std::promise<std::vector<std::shared_ptr<const BlockPayload>>> promise;
    tier->FetchPrefixAsync(std::move(keys), [&promise](std::vector<std::shared_ptr<const BlockPayload>> payloads) {
      promise.set_value(std::move(payloads));
    });
    return promise.get_future().get();
  }
};

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Two requests sharing a prefix export the same blocks; both land in one batch of the writer.
TEST(KvStoreTier, WritesABatchThatRepeatsAKeyOnceKeepingTheFirstCopy) {
  auto daemon = DaemonProcess::Start({"--dram-bytes", std::to_string(64 << 20)});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  Tier t((*daemon)->address());
  ASSERT_NE(t.tier, nullptr);
  const BlockKey a = RandomKey(1), b = RandomKey(2), c = RandomKey(3);
  ::testing::internal::CaptureStderr();
  t.tier->Write({{a, std::nullopt, t.Sealed(a, 1)},
                 {b, a, t.Sealed(b, 2)},
                 {a, std::nullopt, t.Sealed(a, 3)},
                 {c, b, t.Sealed(c, 4)}});
  ASSERT_TRUE(t.tier->WaitForWrites(std::chrono::seconds(20)));
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(log.find("kvstore_unreachable"), std::string::npos) << log;
  EXPECT_EQ(t.metrics.written_blocks->Value(), 3);
  EXPECT_EQ(t.metrics.write_failures->Value(), 0);

  const std::vector<std::shared_ptr<const BlockPayload>> fetched = t.Fetch({a, b, c});
  ASSERT_EQ(fetched.size(), 3u);
  EXPECT_EQ(*fetched[0], *Payload(1));
  EXPECT_EQ(*fetched[1], *Payload(2));
  EXPECT_EQ(*fetched[2], *Payload(4));
}

std::shared_ptr<PayloadPool> PoolOf(uint64_t slots) {
  const uint64_t bytes = slots * PayloadPool::SlotBytes(kBlockBytes);
  auto memory = std::shared_ptr<std::byte[]>(new std::byte[bytes]);
  return std::make_shared<PayloadPool>(HostRegion{memory.get(), bytes, memory}, kBlockBytes);
}

std::shared_ptr<const BlockPayload> SlotPayload(PayloadPool& pool, const BlockMac& mac, const BlockKey& key,
                                                uint8_t fill) {
  std::shared_ptr<BlockPayload> payload = pool.Allocate();
  EXPECT_NE(payload, nullptr);
  if (payload == nullptr) return payload;
  std::fill(payload->data(), payload->data() + payload->size(), std::byte{fill});
  mac.Seal(key, payload->bytes(), payload->trailer());
  return payload;
}

// With the worker's pool: puts read the payloads in place, fetches land in free slots and are the
// payloads returned (no staging), and a fetch takes no more blocks than there are free slots.
TEST(KvStoreTier, FetchesLandInThePoolsFreeSlotsAndNoMore) {
  auto daemon = DaemonProcess::Start({"--dram-bytes", std::to_string(64 << 20)});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  std::shared_ptr<PayloadPool> pool = PoolOf(5);
  Tier t((*daemon)->address(), pool);
  ASSERT_NE(t.tier, nullptr);
  const BlockKey a = RandomKey(1), b = RandomKey(2), c = RandomKey(3);
  t.tier->Write({{a, std::nullopt, SlotPayload(*pool, *t.mac, a, 1)},
                 {b, a, SlotPayload(*pool, *t.mac, b, 2)},
                 {c, b, SlotPayload(*pool, *t.mac, c, 3)}});
  ASSERT_TRUE(t.tier->WaitForWrites(std::chrono::seconds(20)));
  EXPECT_EQ(t.metrics.written_blocks->Value(), 3);
  EXPECT_EQ(pool->slots_in_use(), 0u);  // written and let go

  std::vector<std::shared_ptr<const BlockPayload>> fetched = t.Fetch({a, b, c});
  ASSERT_EQ(fetched.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(pool->InRegion(*fetched[i]));
    EXPECT_EQ(*fetched[i], *Payload(static_cast<uint8_t>(i + 1)));
  }
  EXPECT_EQ(pool->slots_in_use(), 3u);

  // Two slots left: the fetch stops after two blocks (the rest is computed).
  std::vector<std::shared_ptr<const BlockPayload>> two = t.Fetch({a, b, c});
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(*two[1], *Payload(2));
  EXPECT_EQ(pool->misses(), 1u);
  EXPECT_EQ(pool->slots_in_use(), 5u);
  EXPECT_EQ(t.metrics.fetch_failures->Value(), 0);
}

// Fetches run side by side, each into its own payloads.
TEST(KvStoreTier, ConcurrentFetchesEachGetTheirOwnBlocks) {
  auto daemon = DaemonProcess::Start({"--dram-bytes", std::to_string(64 << 20)});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  Tier t((*daemon)->address());
  ASSERT_NE(t.tier, nullptr);
  constexpr int kChains = 8;
  std::vector<BlockKey> keys;
  for (int i = 0; i < kChains; ++i) {
    keys.push_back(RandomKey(100 + i));
    t.tier->Write({{keys.back(), std::nullopt, t.Sealed(keys.back(), static_cast<uint8_t>(10 + i))}});
  }
  ASSERT_TRUE(t.tier->WaitForWrites(std::chrono::seconds(20)));
  std::vector<std::promise<std::vector<std::shared_ptr<const BlockPayload>>>> promises(kChains);
  for (int i = 0; i < kChains; ++i) {
    t.tier->FetchPrefixAsync({keys[i]}, [&promises, i](std::vector<std::shared_ptr<const BlockPayload>> payloads) {
      promises[i].set_value(std::move(payloads));
    });
  }
  for (int i = 0; i < kChains; ++i) {
    std::vector<std::shared_ptr<const BlockPayload>> got = promises[i].get_future().get();
    ASSERT_EQ(got.size(), 1u) << "chain " << i;
    EXPECT_EQ(*got[0], *Payload(static_cast<uint8_t>(10 + i))) << "chain " << i;
  }
}

// A put the daemon answers with an error (here: blocks over its --max-block-bytes) loses its blocks, but
// the daemon is up: no kvstore_unreachable, one kvstore_put_rejected line however many puts fail.
TEST(KvStoreTier, APutTheDaemonRefusesIsNotTakenForAnUnreachableDaemon) {
  auto daemon = DaemonProcess::Start(
      {"--dram-bytes", std::to_string(64 << 20), "--max-block-bytes", std::to_string(kBlockBytes / 2)});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  Tier t((*daemon)->address());
  ASSERT_NE(t.tier, nullptr);
  ::testing::internal::CaptureStderr();
  t.tier->Write({{RandomKey(1), std::nullopt, t.Sealed(RandomKey(1), 1)}});
  ASSERT_TRUE(t.tier->WaitForWrites(std::chrono::seconds(20)));
  t.tier->Write({{RandomKey(2), std::nullopt, t.Sealed(RandomKey(2), 2)}});
  ASSERT_TRUE(t.tier->WaitForWrites(std::chrono::seconds(20)));
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(log.find("kvstore_unreachable"), std::string::npos) << log;
  EXPECT_EQ(Count(log, "error=kvstore_put_rejected"), 1u) << log;
  EXPECT_NE(log.find("code=INVALID_ARGUMENT"), std::string::npos) << log;
  EXPECT_EQ(t.metrics.write_failures->Value(), 2);
  EXPECT_EQ(t.metrics.written_blocks->Value(), 0);
}

// A block put through a plain kvstore client (valid xxh3: the client computes it) with a trailer this
// tier's key did not make, and a block another worker signed with its own key: both misses, counted,
// logged once (throttled), deleted; the run ends before them. The blocks before them are served.
TEST(KvStoreTier, BlocksWhoseMacDoesNotVerifyAreMissesCountedAndDeleted) {
  auto daemon = DaemonProcess::Start({"--dram-bytes", std::to_string(64 << 20)});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  Tier t((*daemon)->address());
  Tier other((*daemon)->address());  // another worker, its own (generated) key
  ASSERT_NE(t.tier, nullptr);
  ASSERT_NE(other.tier, nullptr);
  const BlockKey a = RandomKey(1), b = RandomKey(2), c = RandomKey(3);
  t.tier->Write({{a, std::nullopt, t.Sealed(a, 1)}});
  ASSERT_TRUE(t.tier->WaitForWrites(std::chrono::seconds(20)));
  other.tier->Write({{c, std::nullopt, other.Sealed(c, 3)}});
  ASSERT_TRUE(other.tier->WaitForWrites(std::chrono::seconds(20)));
  // The forger copies a's valid trailer onto chosen bytes under b's key.
  auto client = (*daemon)->Connect();
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<std::byte> forged(kBlockBytes + kBlockMacBytes, std::byte{0x66});
  const std::shared_ptr<const BlockPayload> genuine = t.Sealed(a, 1);
  std::copy(genuine->trailer().begin(), genuine->trailer().end(), forged.begin() + kBlockBytes);
  ASSERT_TRUE((*client)->RegisterMemory(forged.data(), forged.size()).ok());
  ASSERT_TRUE((*client)->Put({{b, forged.data(), forged.size(), a}}).ok());

  ::testing::internal::CaptureStderr();
  const std::vector<std::shared_ptr<const BlockPayload>> ab = t.Fetch({a, b});
  const std::vector<std::shared_ptr<const BlockPayload>> cs = t.Fetch({c});
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(ab.size(), 1u);  // a only
  EXPECT_EQ(*ab[0], *Payload(1));
  EXPECT_TRUE(cs.empty());
  EXPECT_EQ(t.metrics.mac_failures->Value(), 2);
  EXPECT_EQ(t.metrics.fetch_failures->Value(), 0);
  EXPECT_EQ(Count(log, "error=kv_mac_mismatch tier=kvstore"), 1u) << log;  // at most one line a second
  // Deleted, so that the blocks computed instead can be written in their place.
  auto lookup = (*client)->Lookup({a, b, c});
  ASSERT_TRUE(lookup.ok()) << lookup.status();
  EXPECT_EQ(lookup->longest_present_prefix(), 1u);
  const auto present = (*client)->Lookup({c});
  ASSERT_TRUE(present.ok());
  EXPECT_EQ(present->longest_present_prefix(), 0u);
  // The other worker's own block would have verified for it (it is not the daemon that refuses).
  EXPECT_EQ(other.metrics.mac_failures->Value(), 0);
}

}  // namespace
}  // namespace strata::worker
