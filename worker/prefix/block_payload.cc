#include "worker/prefix/block_payload.h"

#include <algorithm>

#include "common/status.h"

namespace strata::worker {

namespace {
constexpr uint64_t kSlotAlignment = 64;  // a cache line: slots never share one
}  // namespace

BlockPayload::BlockPayload(size_t bytes, std::byte fill)
    : heap_(bytes + kBlockMacBytes, fill), data_(heap_.data()), size_(bytes) {
  std::fill(heap_.begin() + static_cast<ptrdiff_t>(bytes), heap_.end(), std::byte{0});
}

BlockPayload::BlockPayload(absl::Span<const std::byte> bytes)
    : heap_(bytes.size() + kBlockMacBytes), data_(heap_.data()), size_(bytes.size()) {
  std::copy(bytes.begin(), bytes.end(), heap_.begin());
}

uint64_t PayloadPool::SlotBytes(uint64_t payload_bytes) {
  return (payload_bytes + kBlockMacBytes + kSlotAlignment - 1) / kSlotAlignment * kSlotAlignment;
}

PayloadPool::PayloadPool(HostRegion region, uint64_t payload_bytes) : state_(std::make_shared<State>()) {
  STRATA_CHECK(payload_bytes > 0);
  state_->payload_bytes = payload_bytes;
  state_->slot_bytes = SlotBytes(payload_bytes);
  state_->slots = region.data == nullptr ? 0 : region.bytes / state_->slot_bytes;
  state_->region = std::move(region);
  absl::MutexLock lock(&state_->mutex);
  state_->free.reserve(state_->slots);
  // Handed out from the back: slot 0 first, so that payloads allocated together tend to be adjacent.
  for (uint64_t slot = state_->slots; slot > 0; --slot) state_->free.push_back(static_cast<uint32_t>(slot - 1));
}

std::shared_ptr<BlockPayload> PayloadPool::Allocate() {
  uint32_t slot = 0;
  {
    absl::MutexLock lock(&state_->mutex);
    if (state_->free.empty()) {
      ++state_->misses;
      return nullptr;
    }
    slot = state_->free.back();
    state_->free.pop_back();
  }
  // The owner gives the slot back when the payload dies, and keeps the region alive until then.
  std::shared_ptr<void> owner(state_.get(), [state = state_, slot](void*) {
    absl::MutexLock lock(&state->mutex);
    state->free.push_back(slot);
  });
  return std::make_shared<BlockPayload>(state_->region.data + slot * state_->slot_bytes,
                                        static_cast<size_t>(state_->payload_bytes), std::move(owner));
}

bool PayloadPool::InRegion(const BlockPayload& payload) const {
  const auto begin = reinterpret_cast<uintptr_t>(state_->region.data);
  const auto data = reinterpret_cast<uintptr_t>(payload.data());
  return begin != 0 && data >= begin && data + payload.stored_bytes() <= begin + state_->slots * state_->slot_bytes;
}

uint64_t PayloadPool::slots_in_use() const {
  absl::MutexLock lock(&state_->mutex);
  return state_->slots - state_->free.size();
}

uint64_t PayloadPool::misses() const {
  absl::MutexLock lock(&state_->mutex);
  return state_->misses;
}

}  // namespace strata::worker
