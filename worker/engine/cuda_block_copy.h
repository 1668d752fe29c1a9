// Bulk copies of whole KV blocks between a block pool in device memory and host payloads, for the CUDA
// backend (Backend::CopyBlocksToHost / CopyBlocksFromHost). Private to the engine.
//
// A payload in page-locked memory (cudaMallocHost, cudaHostRegister: the worker's payload pool) moves by
// DMA straight to or from its pool block, one copy per run of adjacent blocks whose payloads are
// adjacent too: at the bus's speed. Any other payload (pageable memory) moves a chunk at a time through
// two device chunks and two pinned chunks of kChunkBytes: a gather (scatter) kernel between the pool's
// blocks and a contiguous device chunk, one DMA between it and pinned memory, and host copies between
// pinned memory and the payloads, spread over up to kHostThreads threads (one thread's memcpy, ~10 GB/s,
// is a fifth of what the DMA moves). The kernel and DMA of one chunk run while the host copies the other.
//
// Not thread-safe: one per backend, on the backend's stream.
#ifndef STRATA_WORKER_ENGINE_CUDA_BLOCK_COPY_H_
#define STRATA_WORKER_ENGINE_CUDA_BLOCK_COPY_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/cuda_owners.h"

namespace strata::engine {

class CudaBlockCopier {
 public:
  explicit CudaBlockCopier(cudaStream_t stream) : stream_(stream) {}

  // Block blocks[i] of `pool` (block_bytes each) into host[i], for every i < host.size(). After the work
  // already on the stream; complete when it returns.
  absl::Status ToHost(const void* pool, absl::Span<const int32_t> blocks, int64_t block_bytes,
                      absl::Span<std::byte* const> host);
  // host[i] into block blocks[i] of `pool`. Complete when it returns (later work on the stream sees it).
  absl::Status FromHost(absl::Span<const std::byte* const> host, void* pool, absl::Span<const int32_t> blocks,
                        int64_t block_bytes);

 private:
  struct Chunk {
    kernels::DeviceBuffer device;
    kernels::PinnedBuffer pinned;
    kernels::Event done;  // after the chunk's last transfer
  };
  // The blocks of one call split by where their payloads are.
  struct Split {
    std::vector<int32_t> direct_blocks, staged_blocks;
    std::vector<std::byte*> direct_host, staged_host;
  };
  static constexpr int64_t kChunkBytes = int64_t{32} << 20;
  static constexpr int kHostThreads = 8;

  static absl::StatusOr<Split> SplitByMemory(absl::Span<const int32_t> blocks, absl::Span<std::byte* const> host);
  // One cudaMemcpyAsync per run of adjacent blocks with adjacent page-locked payloads.
  absl::Status CopyDirect(const Split& split, std::byte* pool, int64_t block_bytes, cudaMemcpyKind kind);
  // Blocks per chunk for blocks of `block_bytes` (at least one), both chunks allocated to fit.
  absl::StatusOr<int64_t> Prepare(int64_t block_bytes);
  // `blocks` in device memory, for the gather and scatter kernels.
  absl::StatusOr<const int32_t*> UploadIds(absl::Span<const int32_t> blocks);
  absl::Status StagedToHost(const void* pool, absl::Span<const int32_t> blocks, int64_t block_bytes,
                            absl::Span<std::byte* const> host);
  absl::Status StagedFromHost(absl::Span<std::byte* const> host, void* pool, absl::Span<const int32_t> blocks,
                              int64_t block_bytes);
  // Waits for everything enqueued on the stream so far.
  absl::Status Finish();
  Chunk& ChunkOf(int64_t first, int64_t per_chunk) { return chunks_[(first / per_chunk) % 2]; }

  cudaStream_t stream_;
  Chunk chunks_[2];
  kernels::DeviceBuffer ids_;
  kernels::Event done_;  // after a call's last copy
};

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_CUDA_BLOCK_COPY_H_
