#include "kvstore/arena.h"

#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "common/log.h"
#include "common/strings.h"

namespace strata::kvstore {
namespace {

constexpr uint64_t kHugePageBytes = uint64_t{2} << 20;

// CAP_IPC_LOCK (bit 14 of CapEff in /proc/self/status) lifts RLIMIT_MEMLOCK; root has it.
bool HasIpcLockCapability() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) != 0) continue;
    const uint64_t caps = std::stoull(line.substr(7), nullptr, 16);
    return (caps >> 14) & 1;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Arena>> Arena::Create(uint64_t bytes) {
  if (bytes == 0) return absl::InvalidArgumentError("DRAM arena: size must be positive");
  const uint64_t size = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
  bool huge_pages = base != MAP_FAILED;
  if (!huge_pages) {
    base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
      return absl::ResourceExhaustedError(
          StrCat("DRAM arena: mmap of ", size, " bytes failed: ", std::strerror(errno), "; lower --dram-bytes"));
    }
    // Transparent huge pages where enabled ("madvise" or "always"); harmless where not.
    madvise(base, size, MADV_HUGEPAGE);
  }
  LogInfo(StrCat("event=arena_mapped bytes=", size, " hugetlb=", huge_pages ? 1 : 0));
  return std::unique_ptr<Arena>(new Arena(static_cast<uint8_t*>(base), size, huge_pages));
}

Arena::~Arena() { munmap(base_, size_); }

void CheckMemlockLimit(uint64_t bytes) {
  rlimit limit{};
  if (getrlimit(RLIMIT_MEMLOCK, &limit) != 0) return;
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= bytes) return;
  // CAP_IPC_LOCK lifts the limit (root has it).
  if (HasIpcLockCapability()) return;
  LogWarning(StrCat("event=memlock_limit_low limit_bytes=", limit.rlim_cur, " arena_bytes=", bytes,
                    " hint=\"RDMA transports pin the arena: raise RLIMIT_MEMLOCK (ulimit -l unlimited, "
                    "systemd LimitMEMLOCK=infinity, docker --ulimit memlock=-1) or lower --dram-bytes\""));
}

}  // namespace strata::kvstore
