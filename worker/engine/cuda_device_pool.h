// DevicePool: the CUDA backend's caching device allocator. Private to the engine.
#ifndef STRATA_WORKER_ENGINE_CUDA_DEVICE_POOL_H_
#define STRATA_WORKER_ENGINE_CUDA_DEVICE_POOL_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda_status.h"

namespace strata::engine {

// A caching allocator for one device, used from the backend's single stream: a freed block goes back to
// a free list of its size and is handed out again without cudaMalloc (which synchronizes the device).
// Reuse is safe because every user of a block is ordered on the same stream. Blocks are released to the
// driver when an allocation fails (then retried) and when the pool dies. Thread-safe: tensors may be
// released from any thread.
class DevicePool {
 public:
  ~DevicePool() { ReleaseCached(); }

  absl::StatusOr<void*> Take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        return p;
      }
    }
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      ReleaseCached();
      STRATA_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, bytes));
    }
    return p;
  }

  void Give(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    free_[bytes].push_back(p);
  }

  // Bytes held in free lists (handed out again before cudaMalloc is asked).
  size_t CachedBytes() {
    std::lock_guard<std::mutex> lock(mu_);
    size_t total = 0;
    for (const auto& [bytes, blocks] : free_) total += bytes * blocks.size();
    return total;
  }

 private:
  void ReleaseCached() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [bytes, blocks] : free_) {
      for (void* p : blocks) cudaFree(p);
    }
    free_.clear();
  }

  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
};

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_CUDA_DEVICE_POOL_H_
