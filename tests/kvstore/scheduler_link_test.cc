// strata-kvstore --scheduler: the daemon registers as a kvstore holder and the scheduler's index follows
// its blocks: published (TIER_KVSTORE_DRAM), evicted to SSD (TIER_KVSTORE_SSD), deleted (gone); after
// kill -9 and a restart on the same SSD directory, the SSD blocks come back through the inventory.
// A real daemon process against an in-process scheduler server on loopback.
#include <grpcpp/grpcpp.h>

#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "proto/scheduler.grpc.pb.h"
#include "scheduler/service.h"
#include "tests/kvstore/test_util.h"
#include "tests/testing/metrics_scrape.h"

namespace strata::kvstore::testing {
namespace {

constexpr uint64_t kBlockBytes = 512 << 10;

class SchedulerLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    scheduler::Options options;
    options.grpc_address = "127.0.0.1:0";
    options.metrics_host = "127.0.0.1";
    options.metrics_port = 0;
    // A restarted kvstore registers again (same holder id) at once: its new incarnation replaces the dead one.
    options.lease = absl::Seconds(2);
    options.heartbeat_interval = absl::Milliseconds(300);
    auto server = scheduler::SchedulerServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = "127.0.0.1:" + std::to_string(server_->grpc_port());
    stub_ = proto::Scheduler::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
    // A worker to route for: the index's kvstore tiers show in its routes.
    proto::RegisterRequest worker;
    worker.set_holder_id("worker-0");
    worker.set_kind(proto::HOLDER_KIND_WORKER);
    worker.set_address("127.0.0.1:1");
    worker.mutable_key_scheme()->set_version(kBlockKeySchemeVersion);
    worker.mutable_key_scheme()->set_block_tokens(16);
    worker.mutable_key_scheme()->set_model_fingerprint(std::string(32, '\x07'));
    worker.mutable_key_scheme()->set_kv_dtype("F32");
    worker.mutable_worker()->set_gpu_kv_blocks(100);
    worker.mutable_worker()->set_block_bytes(kBlockBytes);
    worker.mutable_worker()->set_prefill_linear_s_per_token(1e-3);
    worker.mutable_worker()->set_network_bytes_per_s(1e9);
    worker.mutable_worker()->set_host_to_gpu_bytes_per_s(1e10);
    grpc::ClientContext context;
    proto::RegisterResponse response;
    ASSERT_TRUE(stub_->Register(&context, worker, &response).ok());
    heartbeats_ = std::thread([this, epoch = response.epoch()] {
      do {
        proto::HeartbeatRequest beat;
        beat.set_holder_id("worker-0");
        beat.set_epoch(epoch);
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
        proto::HeartbeatResponse reply;
        (void)stub_->Heartbeat(&context, beat, &reply);
      } while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(300)));
    });
  }

  void TearDown() override {
    stop_.Notify();
    if (heartbeats_.joinable()) heartbeats_.join();
  }

  std::unique_ptr<DaemonProcess> StartKvstore(const std::filesystem::path& ssd_dir,
                                              const std::vector<std::string>& more_args = {}) {
    std::vector<std::string> args = {"--scheduler", address_, "--holder-id", "kvstore-t", "--dram-bytes",
                                     std::to_string(8 * kBlockBytes), "--max-block-bytes",
                                     std::to_string(kBlockBytes), "--ssd-dir", ssd_dir.string(),
                                     "--ssd-sync-ms", "50"};
    args.insert(args.end(), more_args.begin(), more_args.end());
    auto daemon = DaemonProcess::Start(args);
    EXPECT_TRUE(daemon.ok()) << daemon.status();
    return daemon.ok() ? *std::move(daemon) : nullptr;
  }

  // The kvstore's entry in ListHolders: -1 while it is not registered.
  int64_t KvstoreBlocks() {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    proto::ListHoldersResponse response;
    if (!stub_->ListHolders(&context, proto::ListHoldersRequest(), &response).ok()) return -1;
    for (const proto::HolderStatus& holder : response.holders()) {
      if (holder.holder_id() == "kvstore-t" && holder.kind() == proto::HOLDER_KIND_KVSTORE && !holder.resync_pending()) {
        return static_cast<int64_t>(holder.blocks());
      }
    }
    return -1;
  }

  // How many of `keys` the index has at the kvstore's DRAM and at its SSD (each key routed alone).
  std::pair<int, int> Tiers(const std::vector<BlockKey>& keys) {
    int dram = 0, ssd = 0;
    for (const BlockKey& key : keys) {
      proto::RouteRequest request;
      request.set_model_fingerprint(std::string(32, '\x07'));
      request.set_block_keys(key.ToBytes());
      request.set_prompt_tokens(17);
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      proto::RouteResponse response;
      if (!stub_->Route(&context, request, &response).ok()) continue;
      dram += static_cast<int>(response.blocks_kvstore_dram());
      ssd += static_cast<int>(response.blocks_kvstore_ssd());
    }
    return {dram, ssd};
  }

  std::unique_ptr<scheduler::SchedulerServer> server_;
  std::string address_;
  std::unique_ptr<proto::Scheduler::Stub> stub_;
  absl::Notification stop_;
  std::thread heartbeats_;  // keeps the fake worker's lease
};

std::vector<BlockKey> Keys(int count, uint64_t seed) {
  std::vector<BlockKey> keys;
  for (int i = 0; i < count; ++i) keys.push_back(RandomKey(seed + static_cast<uint64_t>(i)));
  return keys;
}

TEST_F(SchedulerLinkTest, TheIndexFollowsPutsEvictionsToSsdDeletesAndARestart) {
  ScratchDir ssd = MakeTempDir("strata-kvstore-link");
  std::unique_ptr<DaemonProcess> daemon = StartKvstore(ssd.path() / "ssd");
  ASSERT_NE(daemon, nullptr);
  ASSERT_TRUE(WaitFor([&] { return KvstoreBlocks() == 0; }, std::chrono::seconds(20))) << "the kvstore never registered";

  auto client = daemon->Connect();
  ASSERT_TRUE(client.ok()) << client.status();
  RegisteredBuffer buffer(**client, 4 * kBlockBytes);
  const std::vector<BlockKey> first = Keys(4, 100);
  PutKeys(**client, buffer, first, kBlockBytes, kBlockBytes);
  ASSERT_TRUE(WaitFor([&] { return KvstoreBlocks() == 4; }, std::chrono::seconds(10))) << KvstoreBlocks();
  EXPECT_EQ(Tiers(first), std::make_pair(4, 0));

  // 12 more in an 8-block arena: at least 8 blocks move to SSD, every one still held.
  const std::vector<BlockKey> more = Keys(12, 200);
  PutKeys(**client, buffer, more, kBlockBytes, kBlockBytes);
  std::vector<BlockKey> all = first;
  all.insert(all.end(), more.begin(), more.end());
  ASSERT_TRUE(WaitFor([&] { return KvstoreBlocks() == 16; }, std::chrono::seconds(10))) << KvstoreBlocks();
  ASSERT_TRUE(WaitFor([&] { auto [dram, ssd_blocks] = Tiers(all); return dram + ssd_blocks == 16 && ssd_blocks >= 8; },
                      std::chrono::seconds(10)))
      << Tiers(all).first << " in DRAM, " << Tiers(all).second << " on SSD";
  const proto::StatsResponse stats = StatsOf(**client);
  const uint64_t on_ssd_only = TierOf(stats, proto::TIER_KVSTORE_SSD).blocks();
  EXPECT_GE(on_ssd_only, 8u);

  absl::StatusOr<uint32_t> deleted = (*client)->Delete(std::vector<BlockKey>{more[10], more[11]});
  ASSERT_TRUE(deleted.ok());
  ASSERT_EQ(*deleted, 2u);
  ASSERT_TRUE(WaitFor([&] { return KvstoreBlocks() == 14; }, std::chrono::seconds(10))) << KvstoreBlocks();

  // kill -9: DRAM-only blocks are gone (write-back), SSD blocks come back with the restarted daemon's
  // inventory, all at the SSD tier. Write-back makes SSD blocks durable at its next sync (the crash
  // contract, kvstore/README.md): wait for two before the kill.
  client->reset();
  auto syncs = [&] {
    return strata::testing::MetricValue(daemon->metrics_port(), "strata_kvstore_ssd_syncs_total").value_or(0);
  };
  const double syncs_before = syncs();
  ASSERT_TRUE(WaitFor([&] { return syncs() >= syncs_before + 2; }, std::chrono::seconds(10)));
  daemon->Kill();
  daemon = StartKvstore(ssd.path() / "ssd");
  ASSERT_NE(daemon, nullptr);
  auto restarted = daemon->Connect();
  ASSERT_TRUE(restarted.ok());
  const uint64_t recovered = TierOf(StatsOf(**restarted), proto::TIER_KVSTORE_SSD).blocks();
  EXPECT_GE(recovered, 6u);
  ASSERT_TRUE(WaitFor([&] { return KvstoreBlocks() == static_cast<int64_t>(recovered); }, std::chrono::seconds(20)))
      << KvstoreBlocks() << " blocks in the index, " << recovered << " on SSD";
  const std::vector<BlockKey> kept(all.begin(), all.begin() + 14);
  EXPECT_EQ(Tiers(kept), std::make_pair(0, static_cast<int>(recovered)));
  EXPECT_EQ(daemon->Terminate(), 0);
}

// --ssd-read-bytes-per-s reaches the scheduler with the registration: a block only on the kvstore's SSD is
// priced at that rate (here 10x below the worker's network rate), not at the network's.
TEST_F(SchedulerLinkTest, PlacementPricesSsdHitsAtTheReportedReadRate) {
  constexpr double kSsdReadBytesPerS = 1e8;
  ScratchDir ssd = MakeTempDir("strata-kvstore-link");
  std::unique_ptr<DaemonProcess> daemon = StartKvstore(ssd.path() / "ssd", {"--ssd-read-bytes-per-s", "1e8"});
  ASSERT_NE(daemon, nullptr);
  ASSERT_TRUE(WaitFor([&] { return KvstoreBlocks() == 0; }, std::chrono::seconds(20))) << "the kvstore never registered";
  auto client = daemon->Connect();
  ASSERT_TRUE(client.ok()) << client.status();
  RegisteredBuffer buffer(**client, 4 * kBlockBytes);
  const std::vector<BlockKey> keys = Keys(12, 300);  // in an 8-block arena: some move to SSD
  PutKeys(**client, buffer, keys, kBlockBytes, kBlockBytes);
  std::optional<BlockKey> on_ssd;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const BlockKey& key : keys) {
          if (Tiers({key}).second == 1) on_ssd = key;
        }
        return on_ssd.has_value();
      },
      std::chrono::seconds(10)))
      << "no block reached the index at the SSD tier";

  scheduler::KeyRoute route;
  route.model_fingerprint.fill(0x07);
  route.keys = {*on_ssd};
  route.prompt_tokens = 17;
  absl::StatusOr<std::vector<scheduler::Estimate>> estimates = server_->scheduler().EstimateAll(route);
  ASSERT_TRUE(estimates.ok()) << estimates.status();
  ASSERT_EQ(estimates->size(), 1u);
  const scheduler::Estimate& estimate = estimates->front();
  EXPECT_EQ(estimate.blocks_by_tier[static_cast<size_t>(scheduler::Tier::kKvstoreSsd)], 1u);
  EXPECT_NEAR(estimate.fetch_s, kBlockBytes / kSsdReadBytesPerS, 1e-6);
  EXPECT_EQ(daemon->Terminate(), 0);
}

}  // namespace
}  // namespace strata::kvstore::testing
