// The SSD tier: blocks in RocksDB with BlobDB (large values in blob files, keys and metadata in the LSM).
//
// Each block is two records written in one WriteBatch: "m"+key -> metadata (size, xxh3-64, parent key),
// small and inline, and "d"+key -> the payload, in a blob file. The index is rebuilt at start-up from the
// metadata records alone, without reading a payload. Every payload read is checked against the
// metadata's checksum (xxh3; RocksDB's slower blob CRC is skipped on reads); a block that fails is
// reported as DataLoss, and the caller deletes it. Writes go through the WAL without fsync: they survive the process
// being killed, not the machine losing power.
//
// A failed write (disk full, I/O error) stops RocksDB's writes until it is resumed. From then on a write
// fails at once with that first error, without touching the disk; at most once a second a write first
// probes the disk and, when it takes writes again, resumes RocksDB (or, when RocksDB will not resume,
// closes and reopens it). Reads go on throughout. Thread-safe.
#ifndef STRATA_KVSTORE_SSD_TIER_H_
#define STRATA_KVSTORE_SSD_TIER_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/block_key.h"
#include "kvstore/options.h"

namespace rocksdb {
class DB;
class WriteBatch;
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
  SsdTier(std::filesystem::path dir, SsdIo io, std::unique_ptr<rocksdb::DB> db);
  // Writes `batch`, or fails fast while the tier is failing (see above).
  absl::Status Write(rocksdb::WriteBatch& batch, std::string_view what);
  // Makes RocksDB writable again after a failure; false while the disk still fails.
  bool Recover() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::Status Closed() const;

  const std::filesystem::path dir_;
  const SsdIo io_;
  absl::Mutex db_mutex_;  // readers: every use of db_; writer: closing and reopening it
  std::unique_ptr<rocksdb::DB> db_ ABSL_GUARDED_BY(db_mutex_);  // null only after a reopen failed
  absl::Mutex mutex_;     // the failure state; held across Recover(), so one caller recovers at a time
  absl::Status failure_ ABSL_GUARDED_BY(mutex_);  // the write error that stopped writes; OK while writable
  absl::Time next_retry_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_SSD_TIER_H_
