// RLIMIT_MEMLOCK, checked once at start-up before the arena is registered (ARCHITECTURE.md: UCX memory
// is registered once, after checking the limit and saying what to raise).
#ifndef STRATA_KVSTORE_MEMLOCK_H_
#define STRATA_KVSTORE_MEMLOCK_H_

#include <cstdint>

namespace strata::kvstore {

// Logs a warning naming what to raise when RLIMIT_MEMLOCK is below `bytes` and the process cannot lock
// memory past it (no CAP_IPC_LOCK). RDMA transports pin the arena; shared memory and TCP do not, so a
// low limit is not an error on a machine without them.
void CheckMemlockLimit(uint64_t bytes);

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_MEMLOCK_H_
