// Bytes of stored blocks changed on disk behind the daemon's back: every such block is a miss (and is
// deleted), never bad data.
#include <rocksdb/db.h>

#include <fstream>

#include "gtest/gtest.h"
#include "tests/kvstore/test_util.h"

namespace strata::kvstore::testing {
namespace {

constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;

std::vector<std::string> DaemonArgs(const ScratchDir& ssd) {
  return {"--dram-bytes", std::to_string(16 * kMiB), "--ssd-dir", ssd.path().string(), "--persist", "write-through"};
}

// Writes `keys` through a write-through daemon and stops it cleanly (RocksDB flushes into blob files).
void Populate(const ScratchDir& ssd, const std::vector<BlockKey>& keys) {
  auto daemon = DaemonProcess::Start(DaemonArgs(ssd));
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  {
    auto client = (*daemon)->Connect();
    ASSERT_TRUE(client.ok()) << client.status();
    RegisteredBuffer buffer(**client, 4 * kMiB);
    PutKeys(**client, buffer, keys, 256 * kKiB, 256 * kKiB);
  }
  EXPECT_EQ((*daemon)->Terminate(), 0);
}

// Reads every key back from a fresh daemon; returns how many were misses. Found blocks must be intact.
int MissesAfterRestart(const ScratchDir& ssd, const std::vector<BlockKey>& keys, uint64_t* checksum_failures) {
  auto daemon = DaemonProcess::Start(DaemonArgs(ssd));
  EXPECT_TRUE(daemon.ok()) << daemon.status();
  if (!daemon.ok()) return -1;
  auto client = (*daemon)->Connect();
  EXPECT_TRUE(client.ok()) << client.status();
  if (!client.ok()) return -1;
  RegisteredBuffer buffer(**client, 4 * kMiB);
  int misses = 0;
  std::vector<BlockKey> missed;
  for (const BlockKey& key : keys) {
    if (!GetAndCheck(**client, buffer, {key}, 256 * kKiB)[0].found) {
      ++misses;
      missed.push_back(key);
    }
  }
  *checksum_failures = StatsOf(**client).checksum_failures();
  if (!missed.empty()) {  // deleted, not just skipped
    auto lookup = (*client)->Lookup(missed);
    EXPECT_TRUE(lookup.ok());
    if (lookup.ok()) {
      EXPECT_FALSE(lookup->blocks(0).present());
    }
  }
  return misses;
}

TEST(Corruption, FlippedBytesInBlobFilesAreMissesNotBadData) {
  ScratchDir ssd = MakeTempDir("strata-kvstore-ssd");
  std::vector<BlockKey> keys;
  for (int i = 0; i < 8; ++i) keys.push_back(RandomKey(800 + i));
  Populate(ssd, keys);
  int blob_files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(ssd.path())) {
    if (entry.path().extension() != ".blob") continue;
    ++blob_files;
    std::fstream file(entry.path(), std::ios::in | std::ios::out | std::ios::binary);
    const uint64_t size = std::filesystem::file_size(entry.path());
    // One byte in every other 256 KiB stretch, past the file header.
    for (uint64_t offset = 100 * kKiB; offset + 1 < size; offset += 512 * kKiB) {
      file.seekg(static_cast<std::streamoff>(offset));
      char byte = 0;
      file.read(&byte, 1);
      byte = static_cast<char>(byte ^ 0x5a);
      file.seekp(static_cast<std::streamoff>(offset));
      file.write(&byte, 1);
    }
  }
  ASSERT_GE(blob_files, 1);
  uint64_t failures = 0;
  const int misses = MissesAfterRestart(ssd, keys, &failures);
  EXPECT_GE(misses, 3);
  EXPECT_LE(misses, 5);
  EXPECT_EQ(failures, static_cast<uint64_t>(misses));
}

TEST(Corruption, AValueRewrittenInRocksDbFailsTheChecksumAndIsDeleted) {
  ScratchDir ssd = MakeTempDir("strata-kvstore-ssd");
  std::vector<BlockKey> keys;
  for (int i = 0; i < 4; ++i) keys.push_back(RandomKey(900 + i));
  Populate(ssd, keys);
  {
    // Same size, one byte changed, valid RocksDB checksums: only the block's xxh3 can tell.
    rocksdb::DB* raw = nullptr;
    rocksdb::Options options;
    options.enable_blob_files = true;
    options.min_blob_size = 4096;
    ASSERT_TRUE(rocksdb::DB::Open(options, ssd.path().string(), &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    std::string data_key = keys[1].ToBytes();
    data_key.insert(data_key.begin(), 'd');
    std::string value;
    ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), data_key, &value).ok());
    value[value.size() / 2] ^= 1;
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), data_key, value).ok());
    ASSERT_TRUE(db->Close().ok());
  }
  uint64_t failures = 0;
  EXPECT_EQ(MissesAfterRestart(ssd, keys, &failures), 1);
  EXPECT_EQ(failures, 1u);
}

}  // namespace
}  // namespace strata::kvstore::testing
