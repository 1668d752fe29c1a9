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

  explicit Tier(const std::string& address) {
    KvStoreTierOptions options;
    options.addresses = {address};
    options.block_bytes = kBlockBytes;
    options.staging_bytes = 4 << 20;
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
