// KvStoreTier's write-back against a real strata-kvstore process: what reaches the daemon, what is counted
// and what is logged when a batch repeats a key or the daemon refuses a put.
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

std::shared_ptr<const BlockPayload> Payload(uint8_t fill) {
  return std::make_shared<const BlockPayload>(kBlockBytes, std::byte{fill});
}

struct Tier {
  MetricsRegistry registry;
  KvStoreTierMetrics metrics{
      .fetch_failures = &registry.AddCounter("fetch_failures_total", "test"),
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
    options.staging_bytes = 4 << 20;
    options.payloads = std::move(payloads);
    absl::StatusOr<std::unique_ptr<KvStoreTier>> created = KvStoreTier::Create(options, metrics);
    EXPECT_TRUE(created.ok()) << created.status();
    if (created.ok()) tier = *std::move(created);
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
  t.tier->Write({{a, std::nullopt, Payload(1)}, {b, a, Payload(2)}, {a, std::nullopt, Payload(3)}, {c, b, Payload(4)}});
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
  auto memory = std::shared_ptr<std::byte[]>(new std::byte[slots * kBlockBytes]);
  return std::make_shared<PayloadPool>(HostRegion{memory.get(), slots * kBlockBytes, memory}, kBlockBytes);
}

std::shared_ptr<const BlockPayload> SlotPayload(PayloadPool& pool, uint8_t fill) {
  std::shared_ptr<BlockPayload> payload = pool.Allocate();
  EXPECT_NE(payload, nullptr);
  if (payload != nullptr) std::fill(payload->data(), payload->data() + payload->size(), std::byte{fill});
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
  t.tier->Write({{a, std::nullopt, SlotPayload(*pool, 1)}, {b, a, SlotPayload(*pool, 2)}, {c, b, SlotPayload(*pool, 3)}});
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
    t.tier->Write({{keys.back(), std::nullopt, Payload(static_cast<uint8_t>(10 + i))}});
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
  t.tier->Write({{RandomKey(1), std::nullopt, Payload(1)}});
  ASSERT_TRUE(t.tier->WaitForWrites(std::chrono::seconds(20)));
  t.tier->Write({{RandomKey(2), std::nullopt, Payload(2)}});
  ASSERT_TRUE(t.tier->WaitForWrites(std::chrono::seconds(20)));
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(log.find("kvstore_unreachable"), std::string::npos) << log;
  EXPECT_EQ(Count(log, "error=kvstore_put_rejected"), 1u) << log;
  EXPECT_NE(log.find("code=INVALID_ARGUMENT"), std::string::npos) << log;
  EXPECT_EQ(t.metrics.write_failures->Value(), 2);
  EXPECT_EQ(t.metrics.written_blocks->Value(), 0);
}

}  // namespace
}  // namespace strata::worker
