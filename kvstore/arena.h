// The DRAM tier's memory: one anonymous mapping made at start-up, backed by huge pages when the kernel
// has them reserved (MAP_HUGETLB), else by transparent huge pages (madvise). Move-only owner.
#ifndef STRATA_KVSTORE_ARENA_H_
#define STRATA_KVSTORE_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"

namespace strata::kvstore {

class Arena {
 public:
  // `bytes` is rounded up to 2 MiB. ResourceExhausted when the mapping fails.
  static absl::StatusOr<std::unique_ptr<Arena>> Create(uint64_t bytes);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  uint8_t* base() const { return base_; }
  uint64_t size() const { return size_; }
  bool huge_pages() const { return huge_pages_; }  // explicit hugetlbfs pages (not THP)

 private:
  Arena(uint8_t* base, uint64_t size, bool huge_pages) : base_(base), size_(size), huge_pages_(huge_pages) {}
  uint8_t* base_;
  uint64_t size_;
  bool huge_pages_;
};

// Logs a warning naming what to raise when RLIMIT_MEMLOCK is below `bytes` and the process cannot
// lock memory past it (RDMA transports pin the arena; shared memory and TCP do not need it).
void CheckMemlockLimit(uint64_t bytes);

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_ARENA_H_
