#include "worker/engine/ssd_file.h"

#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/status.h"
#include "common/strings.h"

namespace strata::engine {
namespace {

// A direct read is cut into requests of this size, up to kQueueDepth in flight: enough to keep an NVMe
// device's queues busy without pinning much kernel memory.
constexpr int64_t kRequestBytes = int64_t{1} << 20;
constexpr unsigned kQueueDepth = 32;

absl::Status ErrnoError(std::string_view what, const std::string& where, int error) {
  const std::string message = StrCat(what, " in ", where, ": ", std::strerror(error));
  if (error == ENOSPC || error == EDQUOT) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

bool Aligned(int64_t value) { return value % SsdFile::kAlignmentBytes == 0; }

}  // namespace

struct SsdFile::Ring {
  io_uring ring;
  bool ready = false;
  ~Ring() {
    if (ready) io_uring_queue_exit(&ring);
  }
};

absl::StatusOr<std::unique_ptr<SsdFile>> SsdFile::Create(const std::string& dir, int64_t bytes, SsdIo io) {
  if (dir.empty()) return absl::InvalidArgumentError("SSD tier: no directory given (--ssd-dir)");
  if (bytes <= 0 || !Aligned(bytes)) {
    return absl::InvalidArgumentError(
        StrCat("SSD tier: file size ", bytes, " is not a positive multiple of ", kAlignmentBytes));
  }
  std::unique_ptr<SsdFile> file(new SsdFile());
  file->where_ = dir;
  file->bytes_ = bytes;
  std::string path = StrCat(dir, "/strata-kv-XXXXXX");
  file->buffered_fd_ = mkstemp(path.data());
  if (file->buffered_fd_ < 0) return ErrnoError("creating a KV file", dir, errno);
  unlink(path.c_str());  // lives as long as the descriptors
  file->direct_fd_ = open(StrCat("/proc/self/fd/", file->buffered_fd_).c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (file->direct_fd_ < 0) {
    return ErrnoError("opening the KV file with O_DIRECT (the file system must support direct I/O)", dir, errno);
  }
  if (const int error = posix_fallocate(file->buffered_fd_, 0, bytes); error != 0) {
    return ErrnoError(StrCat("reserving ", bytes, " bytes"), dir, error);
  }
  if (io == SsdIo::kIoUring) {
    auto ring = std::make_unique<Ring>();
    ring->ready = io_uring_queue_init(kQueueDepth, &ring->ring, 0) == 0;
    if (ring->ready) {
      file->ring_ = std::move(ring);
      file->io_ = SsdIo::kIoUring;
    }
  }
  return file;
}

SsdFile::~SsdFile() {
  ring_.reset();
  if (direct_fd_ >= 0) close(direct_fd_);
  if (buffered_fd_ >= 0) close(buffered_fd_);
}

absl::Status SsdFile::ReadDirect(int64_t offset, int64_t bytes, void* dst) {
  if (!Aligned(offset) || !Aligned(bytes) || reinterpret_cast<uintptr_t>(dst) % kAlignmentBytes != 0) {
    return absl::InvalidArgumentError(
        StrCat("SSD tier: direct read of ", bytes, " bytes at ", offset, " is not aligned to ", kAlignmentBytes));
  }
  if (offset < 0 || offset + bytes > bytes_) {
    return absl::OutOfRangeError(
        StrCat("SSD tier: read [", offset, ", ", offset + bytes, ") of a ", bytes_, "-byte file"));
  }
  auto* out = static_cast<std::byte*>(dst);
  if (io_ == SsdIo::kPread) {
    for (int64_t done = 0; done < bytes;) {
      const ssize_t n =
          pread(direct_fd_, out + done, static_cast<size_t>(std::min(bytes - done, kRequestBytes)), offset + done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return ErrnoError("reading KV", where_, n < 0 ? errno : EIO);
      done += n;
    }
    bytes_read_ += bytes;
    return absl::OkStatus();
  }
  // Keep up to kQueueDepth requests in flight; a short read is resubmitted for its rest.
  io_uring* ring = &ring_->ring;
  struct Pending {
    int64_t offset, bytes;
  };
  std::vector<Pending> todo;
  for (int64_t at = 0; at < bytes; at += kRequestBytes) todo.push_back({at, std::min(kRequestBytes, bytes - at)});
  std::reverse(todo.begin(), todo.end());
  std::vector<Pending> slots(kQueueDepth);
  std::vector<unsigned> free_slots;
  for (unsigned i = 0; i < kQueueDepth; ++i) free_slots.push_back(i);
  unsigned in_flight = 0;
  while (!todo.empty() || in_flight > 0) {
    while (!todo.empty() && !free_slots.empty()) {
      io_uring_sqe* sqe = io_uring_get_sqe(ring);
      if (sqe == nullptr) break;
      const unsigned slot = free_slots.back();
      free_slots.pop_back();
      slots[slot] = todo.back();
      todo.pop_back();
      io_uring_prep_read(sqe, direct_fd_, out + slots[slot].offset, static_cast<unsigned>(slots[slot].bytes),
                         offset + slots[slot].offset);
      io_uring_sqe_set_data64(sqe, slot);
      ++in_flight;
    }
    if (const int submitted = io_uring_submit(ring); submitted < 0) {
      return ErrnoError("submitting KV reads", where_, -submitted);
    }
    io_uring_cqe* cqe = nullptr;
    if (const int waited = io_uring_wait_cqe(ring, &cqe); waited < 0) {
      if (waited == -EINTR) continue;
      return ErrnoError("waiting for KV reads", where_, -waited);
    }
    const unsigned slot = static_cast<unsigned>(io_uring_cqe_get_data64(cqe));
    const int result = cqe->res;
    io_uring_cqe_seen(ring, cqe);
    --in_flight;
    if (result < 0 && result != -EAGAIN && result != -EINTR) return ErrnoError("reading KV", where_, -result);
    if (result == 0) return ErrnoError("reading KV (end of file)", where_, EIO);
    Pending& p = slots[slot];
    if (result > 0) {
      p.offset += result;
      p.bytes -= result;
    }
    if (p.bytes > 0) {
      todo.push_back(p);
    }
    free_slots.push_back(slot);
  }
  bytes_read_ += bytes;
  return absl::OkStatus();
}

absl::Status SsdFile::Write(int64_t offset, const void* src, int64_t bytes) {
  if (offset < 0 || bytes < 0 || offset + bytes > bytes_) {
    return absl::OutOfRangeError(
        StrCat("SSD tier: write [", offset, ", ", offset + bytes, ") of a ", bytes_, "-byte file"));
  }
  const auto* in = static_cast<const std::byte*>(src);
  for (int64_t done = 0; done < bytes;) {
    const ssize_t n = pwrite(buffered_fd_, in + done, static_cast<size_t>(bytes - done), offset + done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoError("writing KV", where_, n < 0 ? errno : EIO);
    done += n;
  }
  bytes_written_ += bytes;
  return absl::OkStatus();
}

absl::Status SsdFile::Read(int64_t offset, int64_t bytes, void* dst) {
  if (offset < 0 || bytes < 0 || offset + bytes > bytes_) {
    return absl::OutOfRangeError(
        StrCat("SSD tier: read [", offset, ", ", offset + bytes, ") of a ", bytes_, "-byte file"));
  }
  auto* out = static_cast<std::byte*>(dst);
  for (int64_t done = 0; done < bytes;) {
    const ssize_t n = pread(buffered_fd_, out + done, static_cast<size_t>(bytes - done), offset + done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ErrnoError("reading KV", where_, n < 0 ? errno : EIO);
    done += n;
  }
  bytes_read_ += bytes;
  return absl::OkStatus();
}

}  // namespace strata::engine
