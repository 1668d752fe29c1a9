// A peer that stalls or drops the connection, made by a TCP proxy (tests/testing/tcp_proxy.h) on the
// gRPC path to a real strata-kvstore: calls end by their deadlines instead of hanging, the daemon frees
// the pins and reservations of clients it no longer hears from (--lease-ttl-ms, --put-ttl-ms), nothing
// stays allocated, the client works again once the path is back, and a real strata-worker whose
// kvstore stalls answers by recomputing, with the output it gives without any cache.
#include <thread>

#include "common/strings.h"
#include "gtest/gtest.h"
#include "kvstore/client/client.h"
#include "proto/kvstore.grpc.pb.h"
#include "tests/cluster/local_cluster.h"
#include "tests/faults/fault_processes.h"
#include "tests/kvstore/daemon_process.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/tcp_proxy.h"

namespace strata::faults {
namespace {

using kvstore::GetBlock;
using kvstore::KvStoreClient;
using kvstore::PutBlock;
using kvstore::testing::FillForKey;
using kvstore::testing::MatchesKey;
using kvstore::testing::RandomKey;
using strata::testing::TcpProxy;
using strata::testing::WaitFor;

constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kBlock = 4 * kMiB;
constexpr int kBlocks = 8;

// A kvstore with short lease and put TTLs, a proxy in front of its gRPC port, a client through the
// proxy and a direct stub that watches the daemon's memory.
class KvstoreStallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string missing = MissingBinaries(); !missing.empty()) GTEST_SKIP() << missing;
    const int port = FreePort();
    auto daemon = StartKvstore(port, dir_.path() / "ports",
                               {"--dram-bytes", std::to_string(64 * kMiB), "--lease-ttl-ms", "1000", "--put-ttl-ms",
                                "1000"});
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
    auto proxy = TcpProxy::Start(port);
    ASSERT_TRUE(proxy.ok()) << proxy.status();
    proxy_ = std::move(*proxy);
    kvstore::ClientOptions options;
    options.address = proxy_->address();
    options.rpc_timeout = std::chrono::milliseconds(1000);
    options.transfer_timeout = std::chrono::milliseconds(3000);
    auto client = KvStoreClient::Connect(options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
    buffer_ = static_cast<uint8_t*>(std::aligned_alloc(4096, kBlocks * kBlock));
    ASSERT_TRUE(client_->RegisterMemory(buffer_, kBlocks * kBlock).ok());
    direct_ = proto::KvStore::NewStub(
        grpc::CreateChannel(StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
    for (int i = 0; i < kBlocks; ++i) keys_.push_back(RandomKey(900 + static_cast<uint64_t>(i)));
  }
  void TearDown() override {
    client_.reset();
    std::free(buffer_);
  }

  // Stats straight from the daemon, past the proxy.
  proto::StatsResponse DirectStats() {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    proto::StatsResponse stats;
    EXPECT_TRUE(direct_->Stats(&context, proto::StatsRequest(), &stats).ok());
    return stats;
  }
  // Nothing pinned, reserved or open: what a daemon owes no one.
  bool Idle() {
    const proto::StatsResponse stats = DirectStats();
    return stats.pinned_bytes() == 0 && stats.reserved_bytes() == 0 && stats.open_leases() == 0 &&
           stats.open_puts() == 0;
  }

  std::vector<PutBlock> PutBlocks() {
    std::vector<PutBlock> blocks;
    for (int i = 0; i < kBlocks; ++i) {
      FillForKey(keys_[i], buffer_ + i * kBlock, kBlock);
      blocks.push_back(PutBlock{keys_[i], buffer_ + i * kBlock, kBlock, std::nullopt});
    }
    return blocks;
  }
  std::vector<GetBlock> GetBlocks() {
    std::memset(buffer_, 0xEE, kBlocks * kBlock);
    std::vector<GetBlock> blocks;
    for (int i = 0; i < kBlocks; ++i) blocks.push_back(GetBlock{keys_[i], buffer_ + i * kBlock, kBlock});
    return blocks;
  }
  // Every block a get reported found has the key's bytes.
  void ExpectVerified(const absl::StatusOr<std::vector<kvstore::GetOutcome>>& outcomes) {
    if (!outcomes.ok()) return;
    for (int i = 0; i < kBlocks; ++i) {
      if ((*outcomes)[i].found) {
        EXPECT_TRUE(MatchesKey(keys_[i], buffer_ + i * kBlock, kBlock)) << i;
      }
    }
  }

  strata::testing::ScratchDir dir_ = strata::testing::MakeTempDir("strata-faults-stall");
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<TcpProxy> proxy_;
  std::unique_ptr<KvStoreClient> client_;
  std::unique_ptr<proto::KvStore::Stub> direct_;
  uint8_t* buffer_ = nullptr;
  std::vector<BlockKey> keys_;
};

// A get whose lease is granted and whose EndGet never arrives, and a put whose reservation is granted
// and whose commit never arrives: the stalled calls fail by their deadlines and the daemon frees both.
TEST_F(KvstoreStallTest, StalledCallsFailByTheirDeadlinesAndTheDaemonFreesWhatTheyHeld) {
  ASSERT_TRUE(client_->Put(PutBlocks()).ok());
  auto stub = proto::KvStore::NewStub(grpc::CreateChannel(proxy_->address(), grpc::InsecureChannelCredentials()));
  auto call = [](auto method) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1000));
    return method(context);
  };
  proto::BeginGetRequest begin_get;
  for (const BlockKey& key : keys_) begin_get.add_keys(key.ToBytes());
  proto::BeginGetResponse lease;
  ASSERT_TRUE(call([&](grpc::ClientContext& c) { return stub->BeginGet(&c, begin_get, &lease); }).ok());
  proto::BeginPutRequest begin_put;
  proto::PutItem* item = begin_put.add_items();
  item->set_key(RandomKey(999).ToBytes());
  item->set_size_bytes(kBlock);
  proto::BeginPutResponse reservation;
  ASSERT_TRUE(call([&](grpc::ClientContext& c) { return stub->BeginPut(&c, begin_put, &reservation); }).ok());
  EXPECT_EQ(DirectStats().pinned_bytes(), kBlocks * kBlock);
  EXPECT_EQ(DirectStats().reserved_bytes(), kBlock);

  proxy_->Freeze();
  proto::EndGetRequest end_get;
  end_get.set_lease_id(lease.lease_id());
  proto::EndGetResponse ended;
  const grpc::Status end_status = call([&](grpc::ClientContext& c) { return stub->EndGet(&c, end_get, &ended); });
  EXPECT_EQ(end_status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << end_status.error_message();
  // The real client's calls end by their deadlines too (rpc_timeout 1 s), with an error, not a hang.
  const absl::Status get = client_->Get(GetBlocks()).status();
  EXPECT_TRUE(absl::IsDeadlineExceeded(get) || absl::IsUnavailable(get)) << get;
  const absl::Status put = client_->Put(PutBlocks()).status();
  EXPECT_TRUE(absl::IsDeadlineExceeded(put) || absl::IsUnavailable(put)) << put;

  // The daemon never heard the end of either: the lease and the reservation lapse.
  EXPECT_TRUE(WaitFor([&] { return Idle(); }, std::chrono::seconds(10))) << DirectStats().DebugString();
  EXPECT_GE(DirectStats().expired_leases(), 1u);
  EXPECT_GE(DirectStats().expired_puts(), 1u);
  EXPECT_EQ(DirectStats().arena_allocated_bytes(), kBlocks * kBlock) << "only the stored blocks remain";

  proxy_->Thaw();
  auto outcomes = client_->Get(GetBlocks());
  ASSERT_TRUE(outcomes.ok()) << outcomes.status();
  for (int i = 0; i < kBlocks; ++i) EXPECT_TRUE((*outcomes)[i].found);
  ExpectVerified(outcomes);
  EXPECT_TRUE(WaitFor([&] { return Idle(); }, std::chrono::seconds(5)));
}

// The path freezes or is cut while the real client is moving a batch (gets and puts in a loop): each
// call returns, every block it reports found has its bytes, the daemon ends up holding nothing for
// it, and after the path is back the client works again.
TEST_F(KvstoreStallTest, AFreezeOrACutMidTransferNeverHangsNeverServesWrongBytesAndLeaksNothing) {
  ASSERT_TRUE(client_->Put(PutBlocks()).ok());
  for (const bool cut : {false, true}) {
    std::atomic<bool> stop{false};
    std::atomic<int> calls{0}, failed{0};
    std::jthread load([&] {
      while (!stop.load()) {
        auto outcomes = client_->Get(GetBlocks());
        ExpectVerified(outcomes);
        if (!outcomes.ok()) ++failed;
        ++calls;
      }
    });
    // Strike while a lease is open, i.e. mid-transfer.
    WaitFor([&] { return DirectStats().pinned_bytes() > 0; }, std::chrono::seconds(5));
    if (cut) {
      proxy_->Cut();
    } else {
      proxy_->Freeze();
      // Long enough for a call to run into its deadline (1 s) and the lease TTL (1 s) to pass.
      std::this_thread::sleep_for(std::chrono::milliseconds(2500));
      proxy_->Thaw();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // more traffic after the fault
    stop = true;
    load.join();
    EXPECT_GT(calls.load(), 0);
    EXPECT_TRUE(WaitFor([&] { return Idle(); }, std::chrono::seconds(10)))
        << (cut ? "cut: " : "freeze: ") << DirectStats().DebugString();
    auto outcomes = client_->Get(GetBlocks());
    ASSERT_TRUE(outcomes.ok()) << (cut ? "cut: " : "freeze: ") << outcomes.status();
    for (int i = 0; i < kBlocks; ++i) EXPECT_TRUE((*outcomes)[i].found);
    ExpectVerified(outcomes);
    if (!cut) {
      EXPECT_GT(failed.load(), 0) << "the freeze did not fail a single call";
    }
  }
  EXPECT_EQ(DirectStats().arena_allocated_bytes(), kBlocks * kBlock);
}

// A real strata-worker whose kvstore stalls (or whose connection to it is cut) still answers every
// request, by recomputing, with exactly the tokens it gives with no cache at all.
TEST(WorkerStallTest, AWorkerWhoseKvstoreStallsRecomputesAndAnswersTheSame) {
  if (const std::string missing = MissingBinaries(); !missing.empty()) GTEST_SKIP() << missing;
  strata::testing::ScratchDir dir = strata::testing::MakeTempDir("strata-faults-worker-stall");
  const int port = FreePort();
  auto kvstore = StartKvstore(port, dir.path() / "kvstore.ports",
                              {"--dram-bytes", std::to_string(64 * kMiB), "--lease-ttl-ms", "1000"});
  ASSERT_TRUE(kvstore.ok()) << kvstore.status();
  auto proxy = TcpProxy::Start(port);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  // No GPU or host cache (tiers G and H), and no fetch policy (a tiny model is cheaper to recompute):
  // every request asks the kvstore for its prefix.
  auto writer = StartWorker(dir.path() / "writer.ports",
                            {"--kvstore", StrCat("127.0.0.1:", port), "--gpu-cache", "off", "--host-cache-bytes", "0",
                             "--kvstore-fetch", "always", "--worker-id", "w"});
  ASSERT_TRUE(writer.ok()) << writer.status();
  auto reader = StartWorker(dir.path() / "reader.ports",
                            {"--kvstore", (*proxy)->address(), "--gpu-cache", "off", "--host-cache-bytes", "0",
                             "--kvstore-fetch", "always", "--worker-id", "r"});
  ASSERT_TRUE(reader.ok()) << reader.status();
  const std::string writer_address = StrCat("127.0.0.1:", (*writer)->grpc_port());
  const std::string reader_address = StrCat("127.0.0.1:", (*reader)->grpc_port());

  const std::vector<int32_t> prompt = cluster_testing::Tokens(77, 80);  // 5 blocks of 16 tokens
  const auto reference = cluster_testing::Generate(writer_address, prompt, 8, /*disable_prefix_cache=*/true);
  ASSERT_TRUE(reference.ok) << reference.error;
  // The writer stores the prompt's blocks in the kvstore; the reader, through the proxy, reuses them.
  ASSERT_TRUE(cluster_testing::Generate(writer_address, prompt, 8, false).ok);
  ASSERT_TRUE(WaitFor(
      [&] {
        return strata::testing::MetricValue((*kvstore)->metrics_port(), "strata_kvstore_blocks{tier=\"dram\"}")
                   .value_or(0) >= 4;
      },
      std::chrono::seconds(20)));
  const auto warm = cluster_testing::Generate(reader_address, prompt, 8, false);
  ASSERT_TRUE(warm.ok) << warm.error;
  EXPECT_EQ(warm.ids, reference.ids);
  EXPECT_GT(warm.prefix.cached_tokens_kvstore(), 0u) << "the path through the proxy should work before the fault";

  (*proxy)->Freeze();
  const auto frozen = cluster_testing::Generate(reader_address, prompt, 8, false);
  ASSERT_TRUE(frozen.ok) << "a stalled kvstore must not fail the request: " << frozen.error;
  EXPECT_EQ(frozen.ids, reference.ids);
  EXPECT_EQ(frozen.prefix.cached_tokens_kvstore(), 0u);
  EXPECT_EQ(frozen.prefix.prefill_tokens(), prompt.size()) << "the stalled prefix must be recomputed";

  (*proxy)->Cut();
  (*proxy)->Thaw();
  const auto after_cut = cluster_testing::Generate(reader_address, prompt, 8, false);
  ASSERT_TRUE(after_cut.ok) << after_cut.error;
  EXPECT_EQ(after_cut.ids, reference.ids);

  // Whatever the reader's stalled calls left pinned at the kvstore lapses.
  auto direct = KvStoreClient::Connect({.address = StrCat("127.0.0.1:", port)});
  ASSERT_TRUE(direct.ok()) << direct.status();
  EXPECT_TRUE(WaitFor(
      [&] {
        auto stats = (*direct)->Stats();
        return stats.ok() && stats->pinned_bytes() == 0 && stats->reserved_bytes() == 0 && stats->open_leases() == 0;
      },
      std::chrono::seconds(10)));
}

}  // namespace
}  // namespace strata::faults
