// An LD_PRELOAD library that makes writes to files under one directory fail, for disk-full and I/O-error
// tests of a real daemon (RocksDB underneath) without a real full disk:
//
//   LD_PRELOAD=libstrata_io_fault_shim.so STRATA_IO_FAULT_DIR=/ssd/dir STRATA_IO_FAULT_CONTROL=/tmp/ctl daemon ...
//
// The control file holds one line, "<mode> [bytes]", re-read whenever it changes (its mtime or size):
//   ok               every call passes through (also: the file is missing or empty)
//   enospc [N]       after N more bytes (default 0) written under the directory, writes fail with ENOSPC
//   eio [N]          the same with EIO
// Write the file with rename() so a reader never sees half a line. Interposed: write, pwrite, pwrite64,
// writev, pwritev, pwritev64, pwritev2, pwritev64v2, fallocate, fallocate64, posix_fallocate,
// posix_fallocate64, fsync, fdatasync, sync_file_range; once failing, the sync calls fail too (as a disk
// that lost a write does), except sync_file_range with flags 0, a no-op. Only file descriptors whose /proc/self/fd link lies under the directory are
// touched; sockets, pipes and other files pass straight through.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;
static int g_mode_errno;          // 0: pass through
static int64_t g_budget;          // bytes still allowed before failing (when g_mode_errno != 0)
static struct timespec g_mtime;   // of the control file as last read
static off_t g_size = -1;

static const char* Dir(void) {
  static const char* dir;
  static int done;
  if (!done) {
    dir = getenv("STRATA_IO_FAULT_DIR");
    done = 1;
  }
  return dir;
}

// Whether `fd` names a file under STRATA_IO_FAULT_DIR.
static int Watched(int fd) {
  const char* dir = Dir();
  if (dir == NULL || *dir == '\0' || fd < 0) return 0;
  char link[64], target[4096];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, target, sizeof(target) - 1);
  if (n <= 0) return 0;
  target[n] = '\0';
  const size_t dir_length = strlen(dir);
  return strncmp(target, dir, dir_length) == 0 && (target[dir_length] == '/' || target[dir_length] == '\0');
}

// Re-reads the control file if it changed. REQUIRES: g_mutex held.
static void Refresh(void) {
  const char* path = getenv("STRATA_IO_FAULT_CONTROL");
  struct stat st;
  if (path == NULL || stat(path, &st) != 0) {
    g_mode_errno = 0;
    g_size = -1;
    return;
  }
  if (st.st_size == g_size && st.st_mtim.tv_sec == g_mtime.tv_sec && st.st_mtim.tv_nsec == g_mtime.tv_nsec) return;
  g_size = st.st_size;
  g_mtime = st.st_mtim;
  g_mode_errno = 0;
  g_budget = 0;
  FILE* file = fopen(path, "r");
  if (file == NULL) return;
  char mode[32] = {0};
  long long budget = 0;
  const int fields = fscanf(file, "%31s %lld", mode, &budget);
  fclose(file);
  if (fields < 1) return;
  if (strcmp(mode, "enospc") == 0) g_mode_errno = ENOSPC;
  if (strcmp(mode, "eio") == 0) g_mode_errno = EIO;
  g_budget = fields == 2 && budget > 0 ? budget : 0;
}

// 0 when a call on `fd` moving `bytes` may proceed; otherwise the errno it fails with. A write larger
// than what is left of the budget fails whole (a disk that fills mid-write may also write part; RocksDB
// treats both the same way).
static int Fault(int fd, int64_t bytes) {
  if (!Watched(fd)) return 0;
  pthread_mutex_lock(&g_mutex);
  Refresh();
  int error = 0;
  if (g_mode_errno != 0) {
    if (bytes > 0 && g_budget >= bytes) {
      g_budget -= bytes;
    } else if (bytes > 0 || g_budget == 0) {
      error = g_mode_errno;
      g_budget = 0;
    }
  }
  pthread_mutex_unlock(&g_mutex);
  return error;
}

static int64_t IovBytes(const struct iovec* iov, int count) {
  int64_t total = 0;
  for (int i = 0; i < count; ++i) total += (int64_t)iov[i].iov_len;
  return total;
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))
#define FAIL_IF(fd, bytes, failed)   \
  do {                               \
    const int e = Fault(fd, bytes);  \
    if (e != 0) {                    \
      errno = e;                     \
      return failed;                 \
    }                                \
  } while (0)

ssize_t write(int fd, const void* buf, size_t count) {
  FAIL_IF(fd, (int64_t)count, -1);
  return NEXT(write)(fd, buf, count);
}
ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset) {
  FAIL_IF(fd, (int64_t)count, -1);
  return NEXT(pwrite)(fd, buf, count, offset);
}
ssize_t pwrite64(int fd, const void* buf, size_t count, off64_t offset) {
  FAIL_IF(fd, (int64_t)count, -1);
  return NEXT(pwrite64)(fd, buf, count, offset);
}
ssize_t writev(int fd, const struct iovec* iov, int count) {
  FAIL_IF(fd, IovBytes(iov, count), -1);
  return NEXT(writev)(fd, iov, count);
}
ssize_t pwritev(int fd, const struct iovec* iov, int count, off_t offset) {
  FAIL_IF(fd, IovBytes(iov, count), -1);
  return NEXT(pwritev)(fd, iov, count, offset);
}
ssize_t pwritev64(int fd, const struct iovec* iov, int count, off64_t offset) {
  FAIL_IF(fd, IovBytes(iov, count), -1);
  return NEXT(pwritev64)(fd, iov, count, offset);
}
ssize_t pwritev2(int fd, const struct iovec* iov, int count, off_t offset, int flags) {
  FAIL_IF(fd, IovBytes(iov, count), -1);
  return NEXT(pwritev2)(fd, iov, count, offset, flags);
}
ssize_t pwritev64v2(int fd, const struct iovec* iov, int count, off64_t offset, int flags) {
  FAIL_IF(fd, IovBytes(iov, count), -1);
  return NEXT(pwritev64v2)(fd, iov, count, offset, flags);
}
int fallocate(int fd, int mode, off_t offset, off_t length) {
  FAIL_IF(fd, 0, -1);  // reserves no budget; fails once it is spent
  return NEXT(fallocate)(fd, mode, offset, length);
}
int fallocate64(int fd, int mode, off64_t offset, off64_t length) {
  FAIL_IF(fd, 0, -1);  // reserves no budget; fails once it is spent
  return NEXT(fallocate64)(fd, mode, offset, length);
}
// posix_fallocate returns the error instead of setting errno.
int posix_fallocate(int fd, off_t offset, off_t length) {
  const int e = Fault(fd, 0);
  return e != 0 ? e : NEXT(posix_fallocate)(fd, offset, length);
}
int posix_fallocate64(int fd, off64_t offset, off64_t length) {
  const int e = Fault(fd, 0);
  return e != 0 ? e : NEXT(posix_fallocate64)(fd, offset, length);
}
int fsync(int fd) {
  FAIL_IF(fd, 0, -1);
  return NEXT(fsync)(fd);
}
int fdatasync(int fd) {
  FAIL_IF(fd, 0, -1);
  return NEXT(fdatasync)(fd);
}
int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags) {
  // flags 0 is a no-op the kernel answers without touching the disk; RocksDB probes support with it.
  if (flags != 0) FAIL_IF(fd, 0, -1);
  return NEXT(sync_file_range)(fd, offset, nbytes, flags);
}
