// The SSD tier: blocks in RocksDB with BlobDB (large values in blob files, keys and metadata in the LSM).
//
// Each block is two records written in one WriteBatch: "m"+key -> metadata (size, xxh3-64, parent key),
// small and inline, and "d"+key -> the payload, in a blob file. The index is rebuilt at start-up from the
// metadata records alone, without reading a payload. Every payload read is checked against the
// metadata's checksum (xxh3; RocksDB's slower blob CRC is skipped on reads); a block that fails is
// reported as DataLoss, and the caller deletes it. Writes go through the WAL without fsync: they survive the process
// being killed, not the machine losing power. Thread-safe (RocksDB is).
#ifndef STRATA_KVSTORE_SSD_TIER_H_
#define STRATA_KVSTORE_SSD_TIER_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/block_key.h"
#include "kvstore/options.h"

namespace rocksdb {
class DB;
}

namespace strata::kvstore {

struct SsdBlockMeta {
  uint64_t size_bytes = 0;
  uint64_t checksum = 0;  // xxh3-64 of the payload
  std::optional<BlockKey> parent;
};

class SsdTier {
 public:
  static absl::StatusOr<std::unique_ptr<SsdTier>> Open(const std::filesystem::path& dir, SsdIo io);
  ~SsdTier();

  // REQUIRES: `data` holds meta.size_bytes bytes whose xxh3-64 is meta.checksum.
  absl::Status Put(const BlockKey& key, const SsdBlockMeta& meta, const uint8_t* data);
  // Reads the payload into `out` (meta.size_bytes bytes) and checks it. NotFound; DataLoss when the
  // payload is missing, has another size, fails RocksDB's checks or the checksum.
  absl::Status Read(const BlockKey& key, const SsdBlockMeta& meta, uint8_t* out);
  absl::Status Delete(const BlockKey& key);
  // Every block's metadata; malformed metadata records are deleted and counted in `*dropped`.
  absl::Status ForEach(const std::function<void(const BlockKey&, const SsdBlockMeta&)>& visit, uint64_t* dropped);

 private:
  explicit SsdTier(std::unique_ptr<rocksdb::DB> db);
  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_SSD_TIER_H_
