#include "kvstore/memlock.h"

#include <sys/resource.h>

#include <fstream>
#include <string>

#include "common/log.h"
#include "common/strings.h"

namespace strata::kvstore {
namespace {

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
