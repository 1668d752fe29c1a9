#include "kvstore/ssd_tier.h"

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/log.h"
#include "common/status.h"
#include "common/strings.h"
#include "kvstore/checksum.h"

namespace strata::kvstore {
namespace {

constexpr uint32_t kMetaMagic = 0x53544b31;  // "STK1"
constexpr size_t kMetaBytes = 4 + 8 + 8 + 1 + 16;

std::string MetaKey(const BlockKey& key) { return StrCat("m", std::string_view(key.ToBytes())); }
std::string DataKey(const BlockKey& key) { return StrCat("d", std::string_view(key.ToBytes())); }

template <typename T>
void Append(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(value));
}

std::string EncodeMeta(const SsdBlockMeta& meta) {
  std::string out;
  Append(out, kMetaMagic);
  Append(out, meta.size_bytes);
  Append(out, meta.checksum);
  Append(out, static_cast<uint8_t>(meta.parent ? 1 : 0));
  out.append(meta.parent ? meta.parent->ToBytes() : std::string(16, '\0'));
  return out;
}

std::optional<SsdBlockMeta> DecodeMeta(std::string_view in) {
  if (in.size() != kMetaBytes) return std::nullopt;
  uint32_t magic;
  std::memcpy(&magic, in.data(), 4);
  if (magic != kMetaMagic) return std::nullopt;
  SsdBlockMeta meta;
  std::memcpy(&meta.size_bytes, in.data() + 4, 8);
  std::memcpy(&meta.checksum, in.data() + 12, 8);
  if (in[20] == 1) {
    auto parent = BlockKeyFromBytes(in.substr(21, 16));
    if (!parent.ok()) return std::nullopt;
    meta.parent = *parent;
  }
  return meta;
}

// RocksDB's own messages (warnings and worse) go to the daemon's log. RocksDB would otherwise write them to
// a LOG file in --ssd-dir, and a full or failing disk makes that file's writer fail: Debian's librocksdb is
// built with assertions, and the next message after a failed log write aborts the process.
class RocksLogger final : public rocksdb::Logger {
 public:
  RocksLogger() : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list args) override { Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, args); }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list args) override {
    if (level < GetInfoLogLevel()) return;
    char message[1024];
    std::vsnprintf(message, sizeof(message), format, args);
    const std::string line = StrCat("event=rocksdb message=\"", message, "\"");
    if (level >= rocksdb::InfoLogLevel::ERROR_LEVEL) {
      LogError(line);
    } else {
      LogWarning(line);
    }
  }
};

absl::Status FromRocks(const rocksdb::Status& status, std::string_view what) {
  if (status.ok()) return absl::OkStatus();
  const std::string message = StrCat("rocksdb ", what, ": ", status.ToString());
  if (status.IsNotFound()) return absl::NotFoundError(message);
  if (status.IsCorruption()) return absl::DataLossError(message);
  if (status.IsNoSpace()) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

// Opens (creating if missing) the RocksDB under `dir`.
absl::StatusOr<std::unique_ptr<rocksdb::DB>> OpenDb(const std::filesystem::path& dir, SsdIo io) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.enable_blob_files = true;
  options.min_blob_size = 4096;  // payloads go to blob files, metadata stays in the LSM
  options.blob_file_size = uint64_t{256} << 20;
  options.enable_blob_garbage_collection = true;
  // Payloads sit in the memtable until a flush moves them to blob files (there is no WAL: a block is
  // written once, ssd_tier.h): memtables bound the daemon's memory beyond its arena (3 x 64 MiB). A
  // memtable holds a few dozen MiB-sized blocks; writes wait only when two flushes are behind.
  options.write_buffer_size = uint64_t{64} << 20;
  options.max_write_buffer_number = 3;
  options.paranoid_checks = true;
  options.info_log = std::make_shared<RocksLogger>();
  options.IncreaseParallelism(2);
  options.use_direct_reads = io == SsdIo::kDirect;
  options.use_direct_io_for_flush_and_compaction = io == SsdIo::kDirect;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status status = rocksdb::DB::Open(options, dir.string(), &raw);
  if (!status.ok()) return FromRocks(status, StrCat("open ", dir.string()));
  return std::unique_ptr<rocksdb::DB>(raw);
}

// The tier's writes: through the WAL or not (the crash contract in ssd_tier.h; Sync() makes writes durable).
rocksdb::WriteOptions WriteOptionsFor(bool wal) {
  rocksdb::WriteOptions options;
  options.disableWAL = !wal;
  return options;
}

// Whether the disk under `dir` takes a small write and its fsync again.
bool DiskWritable(const std::filesystem::path& dir) {
  const std::string path = (dir / ".strata-write-probe").string();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  char page[4096] = {};
  const bool ok = ::write(fd, page, sizeof(page)) == static_cast<ssize_t>(sizeof(page)) && ::fsync(fd) == 0;
  ::close(fd);
  ::unlink(path.c_str());
  return ok;
}

}  // namespace

SsdTier::SsdTier(std::filesystem::path dir, SsdIo io, bool wal, std::unique_ptr<rocksdb::DB> db)
    : dir_(std::move(dir)), io_(io), wal_(wal), db_(std::move(db)) {}

SsdTier::~SsdTier() {
  absl::WriterMutexLock lock(&db_mutex_);
  if (!db_) return;
  // Graceful close: memtables into SST and blob files, so a restart does not replay the WAL.
  rocksdb::FlushOptions flush;
  flush.wait = true;
  (void)db_->Flush(flush);
  (void)db_->Close();
}

absl::StatusOr<std::unique_ptr<SsdTier>> SsdTier::Open(const std::filesystem::path& dir, SsdIo io, Persist persist) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) return absl::InvalidArgumentError(StrCat("--ssd-dir ", dir.string(), ": ", error.message()));
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<rocksdb::DB> db, OpenDb(dir, io));
  return std::unique_ptr<SsdTier>(new SsdTier(dir, io, persist == Persist::kWriteThrough, std::move(db)));
}

absl::Status SsdTier::Put(const BlockKey& key, const SsdBlockMeta& meta, const uint8_t* data) {
  rocksdb::WriteBatch batch;
  batch.Put(DataKey(key), rocksdb::Slice(reinterpret_cast<const char*>(data), meta.size_bytes));
  batch.Put(MetaKey(key), EncodeMeta(meta));
  return Write(batch, StrCat("put ", key.Hex()));
}

absl::Status SsdTier::Write(rocksdb::WriteBatch& batch, std::string_view what) {
  constexpr absl::Duration kRetryEvery = absl::Seconds(1);
  {
    absl::MutexLock lock(&mutex_);
    if (!failure_.ok()) {
      const absl::Status refused(failure_.code(), StrCat("rocksdb ", what, ": not attempted: the SSD tier stopped "
                                                         "taking writes after an error (retried every second): ",
                                                         failure_.message()));
      if (absl::Now() < next_retry_) return refused;
      next_retry_ = absl::Now() + kRetryEvery;
      if (!Recover()) return refused;
      LogInfo(StrCat("event=ssd_tier_resumed after=\"", failure_.message(), "\" deletes_replayed=",
                     deletes_after_recovery_.size()));
      failure_ = absl::OkStatus();
      if (!deletes_after_recovery_.empty()) {
        rocksdb::WriteBatch deletes;
        for (const BlockKey& key : deletes_after_recovery_) {
          deletes.Delete(MetaKey(key));
          deletes.Delete(DataKey(key));
        }
        absl::ReaderMutexLock db_lock(&db_mutex_);
        rocksdb::FlushOptions flush;
        flush.allow_write_stall = true;
        absl::Status deleted = db_ ? FromRocks(db_->Write(WriteOptionsFor(wal_), &deletes), "delete after recovery") : Closed();
        if (deleted.ok()) deleted = FromRocks(db_->Flush(flush), "flush after recovery");
        if (!deleted.ok()) {
          failure_ = deleted;
          LogError(StrCat("event=ssd_tier_failing message=\"", deleted.message(), "\""));
          return refused;
        }
        deletes_after_recovery_.clear();
      }
    }
  }
  absl::Status written;
  uint64_t generation;
  {
    absl::ReaderMutexLock lock(&db_mutex_);
    generation = generation_;
    written = db_ ? FromRocks(db_->Write(WriteOptionsFor(wal_), &batch), what) : Closed();
  }
  if (!written.ok()) {
    NoteFailure(written, generation);
  } else {
    writes_.fetch_add(1, std::memory_order_release);
  }
  return written;
}

void SsdTier::NoteFailure(const absl::Status& error, uint64_t generation) {
  absl::MutexLock lock(&mutex_);
  // An error of an instance that a recovery has replaced since says nothing of the new one.
  if (!failure_.ok() || generation != generation_) return;
  failure_ = error;
  next_retry_ = absl::Now() + absl::Seconds(1);
  LogError(StrCat("event=ssd_tier_failing message=\"", error.message(), "\""));
}

absl::StatusOr<bool> SsdTier::Sync() {
  const uint64_t mine = writes_.load(std::memory_order_acquire);
  absl::MutexLock lock(&sync_mutex_);
  if (synced_writes_ >= mine) return false;  // a flush that began after our writes has completed
  // This flush covers every write that returned before it began, ours and those of callers now waiting.
  const uint64_t covered = writes_.load(std::memory_order_acquire);
  absl::Status flushed;
  uint64_t generation;
  {
    absl::ReaderMutexLock db_lock(&db_mutex_);
    generation = generation_;
    if (!db_) return Closed();
    rocksdb::FlushOptions flush;
    flush.wait = true;
    flush.allow_write_stall = true;  // now, even past the memtable limit: the caller is waiting on it
    flushed = FromRocks(db_->Flush(flush), "flush");
  }
  if (!flushed.ok()) {
    NoteFailure(flushed, generation);
    return flushed;
  }
  synced_writes_ = covered;
  return true;
}

bool SsdTier::Recover() {
  if (!DiskWritable(dir_)) return false;
  // Resume() flushes what the failed flush left in memory. Then the instance is replaced all the same:
  // after an error RocksDB (7.8) runs its own recovery beside ours, and a manual flush of that instance
  // was seen to return OK before its memtable was committed, which would break Sync()'s promise. A
  // fresh instance carries no error state. Closing flushes what is left; when the disk still fails,
  // blocks only in memtables are lost (never synced: the crash contract allows it), and the caller's index
  // may still list them: their reads fail their checks and they are dropped. Reads wait meanwhile.
  absl::WriterMutexLock lock(&db_mutex_);
  if (db_) {
    (void)db_->Resume();
    (void)db_->Close();
    db_.reset();
  }
  absl::StatusOr<std::unique_ptr<rocksdb::DB>> reopened = OpenDb(dir_, io_);
  if (!reopened.ok()) {
    LogError(StrCat("event=ssd_tier_reopen_failed message=\"", reopened.status().message(), "\""));
    return false;
  }
  db_ = *std::move(reopened);
  ++generation_;
  return true;
}

absl::Status SsdTier::Closed() const {
  return absl::UnavailableError(StrCat("rocksdb ", dir_.string(), ": closed after a disk error and not reopened yet"));
}

absl::Status SsdTier::Read(const BlockKey& key, const SsdBlockMeta& meta, uint8_t* out) {
  rocksdb::ReadOptions read_options;
  // The payload is checked below with its xxh3. RocksDB's own blob CRC would be a second pass over it,
  // and Debian's librocksdb computes CRC32C in software (Slow_CRC32: a third of the read time here).
  read_options.verify_checksums = false;
  rocksdb::PinnableSlice value;
  absl::ReaderMutexLock lock(&db_mutex_);
  if (!db_) return Closed();
  rocksdb::Status status = db_->Get(read_options, db_->DefaultColumnFamily(), DataKey(key), &value);
  if (status.IsNotFound()) return absl::DataLossError(StrCat("block ", key.Hex(), ": payload missing on SSD"));
  if (!status.ok()) {
    const absl::Status error = FromRocks(status, StrCat("get ", key.Hex()));
    return error.code() == absl::StatusCode::kInternal ? error : absl::DataLossError(error.message());
  }
  if (value.size() != meta.size_bytes) {
    return absl::DataLossError(
        StrCat("block ", key.Hex(), ": SSD payload has ", value.size(), " bytes, metadata says ", meta.size_bytes));
  }
  std::memcpy(out, value.data(), value.size());
  const uint64_t checksum = BlockChecksum(out, meta.size_bytes);
  if (checksum != meta.checksum) {
    return absl::DataLossError(StrCat("block ", key.Hex(), ": SSD payload checksum ", checksum, " != ", meta.checksum));
  }
  return absl::OkStatus();
}

absl::Status SsdTier::Delete(const BlockKey& key) {
  rocksdb::WriteBatch batch;
  batch.Delete(MetaKey(key));
  batch.Delete(DataKey(key));
  absl::Status deleted = Write(batch, StrCat("delete ", key.Hex()));
  if (!deleted.ok()) {
    absl::MutexLock lock(&mutex_);
    deletes_after_recovery_.insert(key);
  }
  return deleted;
}

absl::Status SsdTier::ForEach(const std::function<void(const BlockKey&, const SsdBlockMeta&)>& visit,
                              uint64_t* dropped) {
  *dropped = 0;
  absl::ReaderMutexLock lock(&db_mutex_);
  if (!db_) return Closed();
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("m"); it->Valid() && it->key().starts_with("m"); it->Next()) {
    const std::string_view raw_key(it->key().data() + 1, it->key().size() - 1);
    auto key = BlockKeyFromBytes(raw_key);
    auto meta = DecodeMeta(std::string_view(it->value().data(), it->value().size()));
    if (!key.ok() || !meta) {
      ++*dropped;
      db_->Delete(WriteOptionsFor(wal_), it->key());
      continue;
    }
    visit(*key, *meta);
  }
  return FromRocks(it->status(), "scan metadata");
}

}  // namespace strata::kvstore
