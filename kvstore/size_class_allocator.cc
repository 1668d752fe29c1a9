#include "kvstore/size_class_allocator.h"

#include <bit>

#include "common/status.h"

namespace strata::kvstore {
namespace {

int OrderOf(uint64_t bytes) {
  const int order = 64 - std::countl_zero(bytes - 1);  // ceil(log2(bytes))
  return order < SizeClassAllocator::kMinOrder ? SizeClassAllocator::kMinOrder : order;
}

}  // namespace

SizeClassAllocator::SizeClassAllocator(uint64_t capacity_bytes)
    : capacity_bytes_(capacity_bytes >> kMinOrder << kMinOrder), free_(64) {
  // Greedy descending powers of two: each chunk's offset is a sum of larger powers, so it is aligned to
  // its own size and buddies inside it are found by XOR.
  uint64_t offset = 0;
  for (int order = 63; order >= kMinOrder; --order) {
    if ((capacity_bytes_ >> order) & 1) {
      chunks_.push_back({offset, order});
      free_[order].insert(offset);
      offset += uint64_t{1} << order;
    }
  }
}

uint64_t SizeClassAllocator::ClassBytes(uint64_t bytes) { return uint64_t{1} << OrderOf(bytes); }

int SizeClassAllocator::MaxOrderAt(uint64_t offset) const {
  for (const Chunk& chunk : chunks_) {
    if (offset >= chunk.offset && offset < chunk.offset + (uint64_t{1} << chunk.order)) return chunk.order;
  }
  STRATA_CHECK(false);
  return 0;
}

std::optional<uint64_t> SizeClassAllocator::Allocate(uint64_t bytes) {
  STRATA_CHECK(bytes > 0);
  if (bytes > capacity_bytes_) return std::nullopt;
  const int order = OrderOf(bytes);
  int from = order;
  while (from < 64 && free_[from].empty()) ++from;
  if (from >= 64) return std::nullopt;
  const uint64_t offset = *free_[from].begin();
  free_[from].erase(free_[from].begin());
  // Split down to the wanted class, keeping the lower half and freeing the upper.
  while (from > order) {
    --from;
    free_[from].insert(offset + (uint64_t{1} << from));
  }
  allocated_.emplace(offset, order);
  allocated_bytes_ += uint64_t{1} << order;
  return offset;
}

void SizeClassAllocator::Free(uint64_t offset) {
  auto it = allocated_.find(offset);
  STRATA_CHECK(it != allocated_.end());
  int order = it->second;
  allocated_.erase(it);
  allocated_bytes_ -= uint64_t{1} << order;
  const int max_order = MaxOrderAt(offset);
  while (order < max_order) {
    const uint64_t buddy = offset ^ (uint64_t{1} << order);
    auto buddy_it = free_[order].find(buddy);
    if (buddy_it == free_[order].end()) break;
    free_[order].erase(buddy_it);
    offset = offset < buddy ? offset : buddy;
    ++order;
  }
  free_[order].insert(offset);
}

}  // namespace strata::kvstore
