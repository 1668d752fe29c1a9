// The SSD tier: blocks in RocksDB with BlobDB (large values in blob files, keys and metadata in the LSM).
//
// Each block is two records written in one WriteBatch: "m"+key -> metadata (size, xxh3-64, parent key),
// small and inline, and "d"+key -> the payload, in a blob file. The index is rebuilt at start-up from the
// metadata records alone, without reading a payload. Every payload read is checked against the
// metadata's checksum (xxh3; RocksDB's slower blob CRC is skipped on reads); a block that fails is
// reported as DataLoss, and the caller deletes it.
//
// Crash contract. With write-back (the default) writes skip RocksDB's WAL (WriteOptions::disableWAL): a
// payload is written once, into a blob file, not first into the WAL and again at flush. A block is
// durable once a flush that began after its Put returned has completed: its memtable is then in a blob
// file and an SST, both synced, named by the synced MANIFEST (this survives power loss too). Sync() is
// that flush; RocksDB also flushes on its own when a memtable fills (64 MiB). After a crash (kill -9,
// power loss) a block not yet synced is missing, never wrong: its payload and metadata are one WriteBatch
// in one memtable of the one column family, flushed together or not at all, and every read is checked
// against the metadata's xxh3. A Delete not yet synced may be undone by a crash: the block comes back as
// it was (intact). With write-through, writes also go to the WAL (not fsynced), so a Put that returned
// survives kill -9 at once (not power loss until synced): a flush per commit instead was measured at
// 0.4x the throughput for 2 MiB commits, with 3x the disk writes (docs/BENCHMARKS.md).
//
// A failed write (disk full, I/O error) stops RocksDB's writes until it is resumed. From then on a write
// fails at once with that first error, without touching the disk; at most once a second a write first
// probes the disk and, when it takes writes again, resumes RocksDB (or, when RocksDB will not resume,
// closes and reopens it). Reads go on throughout. Thread-safe.
#ifndef STRATA_KVSTORE_SSD_TIER_H_
#define STRATA_KVSTORE_SSD_TIER_H_

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

#include "absl/container/flat_hash_set.h"
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
  // `persist`: kWriteThrough writes through the WAL as well (the crash contract above).
  static absl::StatusOr<std::unique_ptr<SsdTier>> Open(const std::filesystem::path& dir, SsdIo io,
                                                       Persist persist = Persist::kWriteBack);
  ~SsdTier();

  // REQUIRES: `data` holds meta.size_bytes bytes whose xxh3-64 is meta.checksum.
  absl::Status Put(const BlockKey& key, const SsdBlockMeta& meta, const uint8_t* data);
  // Reads the payload into `out` (meta.size_bytes bytes) and checks it. NotFound; DataLoss when the
  // payload is missing, has another size, fails RocksDB's checks or the checksum.
  absl::Status Read(const BlockKey& key, const SsdBlockMeta& meta, uint8_t* out);
  // A Delete refused while the tier is failing is done (and synced) as soon as it resumes, before any
  // other write: a block whose write-through put failed does not come back when a recovery flushes it.
  absl::Status Delete(const BlockKey& key);
  // Makes every Put and Delete that returned before this call durable (see the crash contract above).
  // Returns whether it had anything to flush. Concurrent callers share one flush where they can.
  absl::StatusOr<bool> Sync();
  // Every block's metadata; malformed metadata records are deleted and counted in `*dropped`.
  absl::Status ForEach(const std::function<void(const BlockKey&, const SsdBlockMeta&)>& visit, uint64_t* dropped);

 private:
  SsdTier(std::filesystem::path dir, SsdIo io, bool wal, std::unique_ptr<rocksdb::DB> db);
  // Writes `batch` (no WAL), or fails fast while the tier is failing (see above).
  absl::Status Write(rocksdb::WriteBatch& batch, std::string_view what);
  // Records the first error of a write or flush: writes are refused until Recover().
  // `generation`: of the instance that failed (generation_ when its call began).
  void NoteFailure(const absl::Status& error, uint64_t generation);
  // Makes RocksDB writable again after a failure; false while the disk still fails.
  bool Recover() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  absl::Status Closed() const;

  const std::filesystem::path dir_;
  const SsdIo io_;
  const bool wal_;  // write-through: writes go through the WAL too
  absl::Mutex db_mutex_;  // readers: every use of db_; writer: closing and reopening it
  std::unique_ptr<rocksdb::DB> db_ ABSL_GUARDED_BY(db_mutex_);  // null only after a reopen failed
  // Instances opened since start (written under both mutexes, read under either).
  uint64_t generation_ = 0;
  absl::Mutex mutex_;     // the failure state; held across Recover(), so one caller recovers at a time
  absl::Status failure_ ABSL_GUARDED_BY(mutex_);  // the write error that stopped writes; OK while writable
  absl::Time next_retry_ ABSL_GUARDED_BY(mutex_);
  absl::flat_hash_set<BlockKey> deletes_after_recovery_ ABSL_GUARDED_BY(mutex_);
  std::atomic<uint64_t> writes_{0};  // Writes that returned OK
  absl::Mutex sync_mutex_;           // one flush at a time
  uint64_t synced_writes_ ABSL_GUARDED_BY(sync_mutex_) = 0;  // writes_ covered by the last completed flush
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_SSD_TIER_H_
