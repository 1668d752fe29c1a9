// A full disk (ENOSPC) and a failing disk (EIO) under strata-kvstore's SSD tier, injected by
// tests/testing/io_fault_shim.c (LD_PRELOAD) into the real daemon and its real RocksDB: puts fail with a
// clear status or stay in DRAM, the daemon stays up, blocks already stored keep being served with their
// bytes, nothing stays reserved, and once the disk is back puts reach SSD again and survive kill -9.
#include <cstdlib>
#include <cstring>

#include "common/strings.h"
#include "gtest/gtest.h"
#include "kvstore/client/client.h"
#include "tests/faults/fault_processes.h"
#include "tests/kvstore/daemon_process.h"
#include "tests/testing/metrics_scrape.h"
#include "tests/testing/scratch_dir.h"

namespace strata::faults {
namespace {

using kvstore::GetBlock;
using kvstore::KvStoreClient;
using kvstore::PutBlock;
using kvstore::testing::FillForKey;
using kvstore::testing::MatchesKey;
using kvstore::testing::RandomKey;
using strata::testing::MetricValue;
using strata::testing::WaitFor;

constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kBlock = 256 * 1024;

std::vector<BlockKey> Keys(uint64_t seed, int count) {
  std::vector<BlockKey> keys;
  for (int i = 0; i < count; ++i) keys.push_back(RandomKey(seed * 1000 + static_cast<uint64_t>(i)));
  return keys;
}

// A kvstore whose SSD directory's writes the test can make fail, and one client with a registered buffer.
class DiskFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string missing = MissingBinaries(); !missing.empty()) GTEST_SKIP() << missing;
    if (SanitizerBuild()) {
      GTEST_SKIP() << "sanitizer build: the I/O fault shim would be preloaded ahead of the sanitizer runtime, "
                      "which refuses to start; these faults are covered by the plain build";
    }
    std::filesystem::create_directories(dir_.path() / "ssd");
    ssd_dir_ = std::filesystem::canonical(dir_.path() / "ssd");  // what /proc/self/fd links show
    control_ = dir_.path() / "io-fault";
    SetFault("ok");
    port_ = FreePort();
  }

  void StartDaemon(const std::string& persist, uint64_t dram_bytes) {
    args_ = {"--dram-bytes", std::to_string(dram_bytes), "--ssd-dir", ssd_dir_.string(), "--persist", persist,
             "--ssd-sync-ms", "100"};
    client_.reset();
    auto daemon = StartKvstore(port_, dir_.path() / "ports", args_,
                               {StrCat("LD_PRELOAD=", STRATA_IO_FAULT_SHIM_PATH),
                                StrCat("STRATA_IO_FAULT_DIR=", ssd_dir_.string()),
                                StrCat("STRATA_IO_FAULT_CONTROL=", control_.string())});
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
    kvstore::ClientOptions options;
    options.address = StrCat("127.0.0.1:", port_);
    auto client = KvStoreClient::Connect(options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
    if (buffer_ == nullptr) buffer_ = static_cast<uint8_t*>(std::aligned_alloc(4096, 8 * kMiB));
    ASSERT_TRUE(client_->RegisterMemory(buffer_, 8 * kMiB).ok());
  }

  void TearDown() override {
    client_.reset();
    daemon_.reset();
    std::free(buffer_);
  }

  void SetFault(const std::string& line) { SetIoFault(control_, line); }

  // Until two periodic syncs have completed: then every block on SSD before the call is durable
  // (kvstore/ssd_tier.h's crash contract).
  bool WaitForSync() {
    auto syncs = [&] { return MetricValue(daemon_->metrics_port(), "strata_kvstore_ssd_syncs_total").value_or(0); };
    const double before = syncs();
    return WaitFor([&] { return syncs() >= before + 2; }, std::chrono::seconds(10));
  }

  absl::Status Put(const std::vector<BlockKey>& keys) {
    std::vector<PutBlock> blocks;
    for (size_t i = 0; i < keys.size(); ++i) {
      FillForKey(keys[i], buffer_ + i * kBlock, kBlock);
      blocks.push_back(PutBlock{keys[i], buffer_ + i * kBlock, kBlock, std::nullopt});
    }
    return client_->Put(blocks).status();
  }

  // Gets `keys`; returns how many were found, each checked byte for byte.
  size_t GetAndCheck(const std::vector<BlockKey>& keys) {
    size_t found = 0;
    for (size_t begin = 0; begin < keys.size(); begin += 16) {
      std::vector<GetBlock> blocks;
      for (size_t i = begin; i < std::min(keys.size(), begin + 16); ++i) {
        blocks.push_back(GetBlock{keys[i], buffer_ + (i - begin) * kBlock, kBlock});
      }
      std::memset(buffer_, 0xEE, 8 * kMiB);
      auto outcomes = client_->Get(blocks);
      EXPECT_TRUE(outcomes.ok()) << outcomes.status();
      if (!outcomes.ok()) continue;
      for (size_t i = 0; i < blocks.size(); ++i) {
        if (!(*outcomes)[i].found) continue;
        ++found;
        EXPECT_TRUE(MatchesKey(blocks[i].key, static_cast<const uint8_t*>(blocks[i].data), (*outcomes)[i].size_bytes))
            << "block " << blocks[i].key.Hex() << " served with other bytes";
      }
    }
    return found;
  }

  proto::StatsResponse Stats() {
    auto stats = client_->Stats();
    EXPECT_TRUE(stats.ok()) << stats.status();
    return stats.ok() ? *stats : proto::StatsResponse();
  }

  // The keys among `keys` that Lookup places on the SSD tier (and not also in DRAM).
  std::vector<BlockKey> OnSsd(const std::vector<BlockKey>& keys) {
    auto lookup = client_->Lookup(keys);
    EXPECT_TRUE(lookup.ok()) << lookup.status();
    std::vector<BlockKey> on_ssd;
    for (size_t i = 0; lookup.ok() && i < keys.size(); ++i) {
      if (lookup->blocks(static_cast<int>(i)).tier() == proto::TIER_KVSTORE_SSD) on_ssd.push_back(keys[i]);
    }
    return on_ssd;
  }

  uint64_t SsdBlocks() {
    const proto::StatsResponse stats = Stats();
    for (const proto::TierStats& tier : stats.tiers()) {
      if (tier.tier() == proto::TIER_KVSTORE_SSD) return tier.blocks();
    }
    return 0;
  }

  strata::testing::ScratchDir dir_ = strata::testing::MakeTempDir("strata-faults-disk");
  std::filesystem::path ssd_dir_, control_;
  int port_ = 0;
  std::vector<std::string> args_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<KvStoreClient> client_;
  uint8_t* buffer_ = nullptr;
};

// Write-through: a commit that cannot reach SSD is refused (nothing of it stored, nothing left
// reserved), the daemon keeps serving what it had, and the next put after the disk recovers succeeds.
class WriteThroughDiskFault : public DiskFaultTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(WriteThroughDiskFault, PutsFailCleanlyReadsGoOnAndPutsSucceedOnceTheDiskIsBack) {
  const std::string fault = GetParam();
  StartDaemon("write-through", 32 * kMiB);
  const std::vector<BlockKey> before = Keys(1, 8), during = Keys(2, 4), after = Keys(3, 8);
  ASSERT_TRUE(Put(before).ok());

  SetFault(fault);  // from now on every write under the SSD directory fails
  for (int attempt = 0; attempt < 3; ++attempt) {
    const absl::Status status = Put({during[static_cast<size_t>(attempt)]});
    EXPECT_FALSE(status.ok()) << "a write-through put was acknowledged while its SSD write failed";
    EXPECT_EQ(status.code(), fault == "enospc" ? absl::StatusCode::kResourceExhausted : absl::StatusCode::kInternal)
        << status;
    EXPECT_NE(status.message().find("rocksdb"), std::string::npos) << "the error should name the SSD tier: " << status;
  }
  EXPECT_TRUE(daemon_->running());
  EXPECT_TRUE(Healthy(daemon_->metrics_port()));
  EXPECT_EQ(GetAndCheck(before), before.size()) << "blocks stored before the fault must still be served";
  EXPECT_EQ(GetAndCheck(during), 0u) << "a refused put must store nothing";
  const proto::StatsResponse stats = Stats();
  EXPECT_EQ(stats.reserved_bytes(), 0u);
  EXPECT_EQ(stats.arena_allocated_bytes(), before.size() * kBlock) << "a refused put's DRAM must be freed";

  SetFault("ok");
  // The disk is back: puts succeed again (possibly after the first one lets the SSD tier resume).
  EXPECT_TRUE(WaitFor([&] { return Put({after[0]}).ok(); }, std::chrono::seconds(10)))
      << "puts still fail after the disk recovered";
  ASSERT_TRUE(Put(after).ok());
  EXPECT_EQ(GetAndCheck(after), after.size());

  // And what was acknowledged is on SSD: it survives kill -9.
  daemon_->Kill();
  StartDaemon("write-through", 32 * kMiB);
  EXPECT_EQ(GetAndCheck(before), before.size());
  EXPECT_EQ(GetAndCheck(after), after.size());
  EXPECT_EQ(GetAndCheck(during), 0u);
}

INSTANTIATE_TEST_SUITE_P(Fault, WriteThroughDiskFault, ::testing::Values("enospc", "eio"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param == "enospc" ? std::string("Enospc") : std::string("Eio");
                         });

// Write-back: puts land in DRAM and are acknowledged; evictions that cannot reach SSD drop the block
// (the daemon logs error=ssd_write_back) instead of failing anything; blocks already on SSD keep being
// served; once the disk is back, evictions reach SSD again and, once synced, survive kill -9.
TEST_F(DiskFaultTest, WriteBackPutsStayInDramAndEvictionsResumeOnceTheDiskIsBack) {
  StartDaemon("write-back", 4 * kMiB);  // 16 blocks of 256 KiB
  const std::vector<BlockKey> first = Keys(11, 24);
  for (size_t i = 0; i < first.size(); i += 4) {
    ASSERT_TRUE(Put({first.begin() + static_cast<ptrdiff_t>(i), first.begin() + static_cast<ptrdiff_t>(i + 4)}).ok());
  }
  const std::vector<BlockKey> on_ssd_before = OnSsd(first);
  ASSERT_GE(on_ssd_before.size(), 8u) << "the first puts should have evicted to SSD";

  SetFault("enospc 1048576");  // the disk fills after 1 MiB more
  const std::vector<BlockKey> during = Keys(12, 32);
  for (size_t i = 0; i < during.size(); i += 4) {
    const absl::Status status =
        Put({during.begin() + static_cast<ptrdiff_t>(i), during.begin() + static_cast<ptrdiff_t>(i + 4)});
    EXPECT_TRUE(status.ok()) << "a write-back put needs no disk: " << status;
  }
  EXPECT_TRUE(daemon_->running());
  // The blocks on SSD before the fault are all served, with their bytes (SSD reads need no writes);
  // whatever else the store still has is served with its bytes too.
  EXPECT_EQ(GetAndCheck(on_ssd_before), on_ssd_before.size()) << "blocks on SSD before the fault were lost";
  GetAndCheck(first);
  GetAndCheck(during);
  EXPECT_EQ(Stats().reserved_bytes(), 0u);
  EXPECT_EQ(Stats().pinned_bytes(), 0u);

  SetFault("ok");
  const uint64_t on_ssd_at_recovery = SsdBlocks();
  // Evictions reach SSD again once the SSD tier has retried (at most a second after a failed write).
  std::vector<BlockKey> after;
  EXPECT_TRUE(WaitFor(
      [&] {
        const std::vector<BlockKey> batch = Keys(13 + after.size(), 4);
        if (Put(batch).ok()) after.insert(after.end(), batch.begin(), batch.end());
        return SsdBlocks() >= on_ssd_at_recovery + 8;
      },
      std::chrono::seconds(20)))
      << "evictions do not reach SSD after the disk recovered: " << SsdBlocks() << " blocks on SSD";
  // What is on SSD now survives kill -9, with its bytes.
  std::vector<BlockKey> all = first;
  all.insert(all.end(), during.begin(), during.end());
  all.insert(all.end(), after.begin(), after.end());
  const std::vector<BlockKey> on_ssd = OnSsd(all);
  ASSERT_TRUE(WaitForSync()) << "the SSD tier does not sync after the disk recovered";
  daemon_->Kill();
  StartDaemon("write-back", 4 * kMiB);
  EXPECT_EQ(GetAndCheck(on_ssd), on_ssd.size());
}

}  // namespace
}  // namespace strata::faults
