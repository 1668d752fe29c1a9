// Bulk copies of whole KV blocks between a block pool in device memory and host payloads, for the CUDA
// backend (Backend::CopyBlocksToHost / CopyBlocksFromHost). Private to the engine.
//
// Blocks move a chunk at a time through two device chunks and two pinned chunks of kChunkBytes: a gather
// (scatter) kernel between the pool's blocks and a contiguous device chunk, one DMA between it and pinned
// memory, and host copies between pinned memory and the payloads, spread over up to kHostThreads threads
// (one thread's memcpy, ~10 GB/s, is a fifth of what the DMA moves). The kernel and DMA of one chunk run
// while the host copies the other.
//
// Not thread-safe: one per backend, on the backend's stream.
#ifndef STRATA_WORKER_ENGINE_CUDA_BLOCK_COPY_H_
#define STRATA_WORKER_ENGINE_CUDA_BLOCK_COPY_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/cuda_owners.h"

namespace strata::engine {

class CudaBlockCopier {
 public:
  explicit CudaBlockCopier(cudaStream_t stream) : stream_(stream) {}

  // Block block_ids[i] of `pool` (block_bytes each) into host[i], for every i < host.size(). block_ids
  // are device int32. After the work already on the stream; complete when it returns.
  absl::Status ToHost(const void* pool, const int32_t* block_ids, int64_t block_bytes,
                      absl::Span<std::byte* const> host);
  // host[i] into block block_ids[i] of `pool`. Complete when it returns (later work on the stream sees it).
  absl::Status FromHost(absl::Span<const std::byte* const> host, void* pool, const int32_t* block_ids,
                        int64_t block_bytes);

 private:
  struct Chunk {
    kernels::DeviceBuffer device;
    kernels::PinnedBuffer pinned;
    kernels::Event done;  // after the chunk's last transfer
  };
  static constexpr int64_t kChunkBytes = int64_t{32} << 20;
  static constexpr int kHostThreads = 8;

  // Blocks per chunk for blocks of `block_bytes` (at least one), both chunks allocated to fit.
  absl::StatusOr<int64_t> Prepare(int64_t block_bytes);
  Chunk& ChunkOf(int64_t first, int64_t per_chunk) { return chunks_[(first / per_chunk) % 2]; }

  cudaStream_t stream_;
  Chunk chunks_[2];
};

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_CUDA_BLOCK_COPY_H_
