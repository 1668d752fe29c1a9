#include "common/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "common/strings.h"

namespace strata {
namespace {

// Closes the descriptor on every path out of ReadFile.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  // O_NONBLOCK: a FIFO in place of a file must not hang the open; regular files ignore the flag.
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) {
    const int error = errno;
    if (error == ENOENT) return absl::NotFoundError(StrCat(path.string(), ": no such file"));
    return absl::ErrnoToStatus(error, StrCat(path.string(), ": cannot open"));
  }
  struct stat info;
  if (::fstat(fd.get(), &info) != 0) return absl::ErrnoToStatus(errno, StrCat(path.string(), ": cannot stat"));
  if (!S_ISREG(info.st_mode)) return absl::InvalidArgumentError(StrCat(path.string(), ": not a regular file"));
  std::string bytes(static_cast<size_t>(info.st_size), '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, StrCat(path.string(), ": read failed"));
    if (n == 0) break;  // the file shrank while we read it
    done += static_cast<size_t>(n);
  }
  bytes.resize(done);
  return bytes;
}

absl::Status WriteFileAtomically(const std::filesystem::path& path, std::string_view contents) {
  const std::filesystem::path temporary = path.string() + ".tmp";
  {
    FileDescriptor fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0) return absl::ErrnoToStatus(errno, StrCat(temporary.string(), ": cannot create"));
    while (!contents.empty()) {
      const ssize_t n = ::write(fd.get(), contents.data(), contents.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return absl::ErrnoToStatus(errno, StrCat(temporary.string(), ": cannot write"));
      contents.remove_prefix(static_cast<size_t>(n));
    }
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, StrCat(path.string(), ": cannot rename ", temporary.string(), " onto it"));
  }
  return absl::OkStatus();
}

absl::Status CreateDirectories(const std::filesystem::path& dir, std::string_view what) {
  std::error_code error;
  if (std::filesystem::is_directory(dir, error)) return absl::OkStatus();
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::ErrnoToStatus(error.value(),
                               StrCat(what, ": cannot create directory ", dir.string(), ": ", error.message()));
  }
  if (!std::filesystem::is_directory(dir, error)) {
    return absl::FailedPreconditionError(StrCat(what, ": ", dir.string(), " exists and is not a directory"));
  }
  return absl::OkStatus();
}

}  // namespace strata
