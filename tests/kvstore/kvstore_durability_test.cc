// The SSD tier's crash contract (kvstore/ssd_tier.h), the graceful stop that keeps write-back's DRAM
// blocks, and the per-connection quota, each against a real strata-kvstore process.
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kvstore/daemon_process.h"
#include "tests/kvstore/test_util.h"

namespace strata::kvstore::testing {
namespace {

constexpr uint64_t kMiB = 1 << 20;

std::vector<BlockKey> Keys(uint64_t seed, size_t n) {
  std::vector<BlockKey> keys;
  for (size_t i = 0; i < n; ++i) keys.push_back(RandomKey(seed * 1000 + i));
  return keys;
}

size_t Found(const std::vector<GetOutcome>& outcomes) {
  size_t found = 0;
  for (const GetOutcome& outcome : outcomes) found += outcome.found ? 1 : 0;
  return found;
}

std::vector<std::string> WriteBackArgs(const ScratchDir& dir, uint64_t dram_bytes, int sync_ms) {
  return {"--dram-bytes", std::to_string(dram_bytes), "--ssd-dir", (dir.path() / "ssd").string(),
          "--persist",    "write-back",               "--ssd-sync-ms", std::to_string(sync_ms)};
}

// Write-back evictions reach RocksDB's memtable (no WAL) and become durable only at a sync; with syncs
// off, kill -9 lands between every eviction's commit to the SSD tier and its sync. Blocks synced before
// (by a graceful stop) all come back; the others are misses or their exact bytes, never other bytes.
TEST(KvstoreCrashContract, KillNineBetweenCommitAndSyncLeavesEachBlockMissingOrIntact) {
  const ScratchDir dir = MakeTempDir("strata-kvstore-crash");
  const std::vector<std::string> args = WriteBackArgs(dir, 8 * kMiB, /*sync_ms=*/0);
  const std::vector<BlockKey> synced = Keys(1, 12), unsynced = Keys(2, 40);
  {
    auto daemon = DaemonProcess::Start(args);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    auto client = (*daemon)->Connect();
    ASSERT_TRUE(client.ok()) << client.status();
    RegisteredBuffer buffer(**client, 4 * kMiB);
    PutKeys(**client, buffer, synced, 256 << 10, kMiB);
    ASSERT_EQ((*daemon)->Terminate(), 0);  // a graceful stop syncs
  }
  auto daemon = DaemonProcess::Start(args);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  {
    auto client = (*daemon)->Connect();
    ASSERT_TRUE(client.ok()) << client.status();
    RegisteredBuffer buffer(**client, 4 * kMiB);
    // ~25 MiB through an 8 MiB arena: most of it is evicted into the SSD tier's memtable, none synced.
    PutKeys(**client, buffer, unsynced, 256 << 10, kMiB);
    const proto::StatsResponse stats = StatsOf(**client);
    ASSERT_GT(TierOf(stats, proto::TIER_KVSTORE_SSD).blocks(), 20u) << "the puts should have evicted to SSD";
  }
  (*daemon)->Kill();
  daemon = DaemonProcess::Start(args);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto client = (*daemon)->Connect();
  ASSERT_TRUE(client.ok()) << client.status();
  RegisteredBuffer buffer(**client, 4 * kMiB);
  EXPECT_EQ(Found(GetAndCheck(**client, buffer, synced, kMiB)), synced.size()) << "synced blocks were lost";
  // GetAndCheck fails the test on any found block with other bytes; the client also checks each xxh3.
  const size_t found = Found(GetAndCheck(**client, buffer, unsynced, kMiB));
  EXPECT_LT(found, unsynced.size()) << "nothing was lost: the kill did not land between commit and sync";
  const proto::StatsResponse stats = StatsOf(**client);
  EXPECT_EQ(stats.checksum_failures(), 0u) << "a block came back with a payload that does not match its metadata";
  std::printf("kill -9 before the sync: %zu of %zu unsynced blocks came back (intact), the rest are misses\n", found,
              unsynced.size());
}

// SIGTERM in write-back mode writes the blocks only in DRAM to SSD: after a restart they all hit.
TEST(KvstoreGracefulStop, SigtermInWriteBackKeepsTheDramOnlyBlocks) {
  const ScratchDir dir = MakeTempDir("strata-kvstore-stop");
  const std::vector<std::string> args = WriteBackArgs(dir, 32 * kMiB, 1000);
  const std::vector<BlockKey> keys = Keys(3, 16);
  {
    auto daemon = DaemonProcess::Start(args);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    auto client = (*daemon)->Connect();
    ASSERT_TRUE(client.ok()) << client.status();
    RegisteredBuffer buffer(**client, 4 * kMiB);
    PutKeys(**client, buffer, keys, 256 << 10, kMiB);
    const proto::StatsResponse stats = StatsOf(**client);
    ASSERT_EQ(TierOf(stats, proto::TIER_KVSTORE_SSD).blocks(), 0u) << "the blocks should be only in DRAM";
    ASSERT_EQ((*daemon)->Terminate(), 0);
  }
  auto daemon = DaemonProcess::Start(args);
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto client = (*daemon)->Connect();
  ASSERT_TRUE(client.ok()) << client.status();
  auto lookup = (*client)->Lookup(keys);
  ASSERT_TRUE(lookup.ok()) << lookup.status();
  for (int i = 0; i < lookup->blocks_size(); ++i) EXPECT_EQ(lookup->blocks(i).tier(), proto::TIER_KVSTORE_SSD);
  RegisteredBuffer buffer(**client, 4 * kMiB);
  EXPECT_EQ(Found(GetAndCheck(**client, buffer, keys, kMiB)), keys.size());
}

// One connection may hold at most --max-client-bytes reserved or pinned; others are not held back by it.
TEST(KvstoreQuota, OneConnectionCannotReserveOrPinMoreThanItsQuota) {
  auto daemon = DaemonProcess::Start({"--dram-bytes", std::to_string(32 * kMiB), "--max-client-bytes",
                                      std::to_string(4 * kMiB)});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto client = (*daemon)->Connect();
  ASSERT_TRUE(client.ok()) << client.status();
  RegisteredBuffer buffer(**client, 8 * kMiB);

  // A put of 6 MiB at once is refused, naming the quota; nothing is reserved.
  const std::vector<BlockKey> keys = Keys(4, 6);
  std::vector<PutBlock> blocks;
  for (size_t i = 0; i < keys.size(); ++i) blocks.push_back(PutBlock{keys[i], buffer.data() + i * kMiB, kMiB, {}});
  auto refused = (*client)->Put(blocks);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_NE(refused.status().message().find("--max-client-bytes"), std::string::npos) << refused.status();
  EXPECT_EQ(StatsOf(**client).reserved_bytes(), 0u);
  // In batches under the quota it goes in.
  for (size_t i = 0; i < keys.size(); i += 3) {
    std::vector<PutBlock> half(blocks.begin() + static_cast<ptrdiff_t>(i), blocks.begin() + static_cast<ptrdiff_t>(i + 3));
    for (PutBlock& b : half) std::memset(const_cast<void*>(b.data), static_cast<int>(i), kMiB);
    auto put = (*client)->Put(half);
    ASSERT_TRUE(put.ok()) << put.status();
  }

  // Leases count too: one connection pins 3 MiB and holds the lease; 2 MiB more on it is refused, on
  // another connection it is granted; once the lease ends the first connection may pin again.
  auto stub = RawStub(**daemon);
  auto begin_get = [](proto::KvStore::Stub& s, const std::vector<BlockKey>& ks, proto::BeginGetResponse* reply) {
    proto::BeginGetRequest request;
    for (const BlockKey& k : ks) request.add_keys(k.ToBytes());
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return s.BeginGet(&context, request, reply);
  };
  proto::BeginGetResponse held;
  ASSERT_TRUE(begin_get(*stub, {keys[0], keys[1], keys[2]}, &held).ok());
  ASSERT_NE(held.lease_id(), 0u);
  proto::BeginGetResponse over;
  const grpc::Status refused_get = begin_get(*stub, {keys[3], keys[4]}, &over);
  EXPECT_EQ(refused_get.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused_get.error_message();
  EXPECT_NE(refused_get.error_message().find("--max-client-bytes"), std::string::npos);
  EXPECT_EQ(StatsOf(**client).pinned_bytes(), 3 * kMiB) << "a refused get must pin nothing";
  // gRPC shares one connection among a process's channels to one address; a local subchannel pool makes
  // this channel a connection of its own, as another process's would be.
  grpc::ChannelArguments own_connection;
  own_connection.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto other = proto::KvStore::NewStub(
      grpc::CreateCustomChannel((*daemon)->address(), grpc::InsecureChannelCredentials(), own_connection));
  proto::BeginGetResponse granted;
  ASSERT_TRUE(begin_get(*other, {keys[3], keys[4]}, &granted).ok()) << "another connection has its own quota";
  EXPECT_NE(granted.lease_id(), 0u);
  for (uint64_t lease : {held.lease_id(), granted.lease_id()}) {
    proto::EndGetRequest end;
    end.set_lease_id(lease);
    proto::EndGetResponse ended;
    grpc::ClientContext context;
    ASSERT_TRUE(stub->EndGet(&context, end, &ended).ok());
  }
  proto::BeginGetResponse again;
  EXPECT_TRUE(begin_get(*stub, {keys[3], keys[4]}, &again).ok()) << "the ended lease still counts";
}

}  // namespace
}  // namespace strata::kvstore::testing
