// SsdFile: the SSD tier of one sequence's KV cache (LeoAM's disk tier): one file under a directory,
// read with O_DIRECT through io_uring (many requests in flight, no page-cache copy), or with pread where
// io_uring is not allowed (seccomp in containers, old kernels), and written through the page cache.
//
// The file is unlinked as soon as it is created: it never outlives the process, even after kill -9.
// Reads of a range another call wrote through the page cache see those bytes (the kernel flushes the
// range before a direct read). Not thread-safe.
#ifndef STRATA_WORKER_ENGINE_SSD_FILE_H_
#define STRATA_WORKER_ENGINE_SSD_FILE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace strata::engine {

enum class SsdIo { kIoUring, kPread };

class SsdFile {
 public:
  // Direct reads need offsets, lengths and buffers aligned to this.
  static constexpr int64_t kAlignmentBytes = 4096;

  // A new file of `bytes` (allocated up front, so a full disk fails here and not halfway through a
  // request) in `dir`. `io` picks the read path; kIoUring falls back to kPread when io_uring cannot start.
  static absl::StatusOr<std::unique_ptr<SsdFile>> Create(const std::string& dir, int64_t bytes,
                                                         SsdIo io = SsdIo::kIoUring);
  ~SsdFile();
  SsdFile(const SsdFile&) = delete;
  SsdFile& operator=(const SsdFile&) = delete;

  // Reads [offset, offset + bytes) into `dst`; all three aligned to kAlignmentBytes.
  absl::Status ReadDirect(int64_t offset, int64_t bytes, void* dst);
  // Any offset and length, through the page cache.
  absl::Status Write(int64_t offset, const void* src, int64_t bytes);
  absl::Status Read(int64_t offset, int64_t bytes, void* dst);

  SsdIo io() const { return io_; }
  std::string_view io_name() const { return io_ == SsdIo::kIoUring ? "io_uring" : "pread"; }
  int64_t bytes() const { return bytes_; }
  int64_t bytes_read() const { return bytes_read_; }
  int64_t bytes_written() const { return bytes_written_; }

 private:
  struct Ring;
  SsdFile() = default;

  std::string where_;  // for messages: the directory
  int direct_fd_ = -1;
  int buffered_fd_ = -1;
  int64_t bytes_ = 0;
  SsdIo io_ = SsdIo::kPread;
  std::unique_ptr<Ring> ring_;
  int64_t bytes_read_ = 0;
  int64_t bytes_written_ = 0;
};

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_SSD_FILE_H_
