#include "worker/engine/cuda_block_copy.h"

#include <algorithm>
#include <cstring>

#include "common/status.h"
#include "kernels/cuda_status.h"
#include "kernels/elementwise.h"

namespace strata::engine {
namespace {

// Below this many bytes a chunk's host copies run on the calling thread: a team costs more than it saves.
constexpr int64_t kParallelCopyBytes = int64_t{1} << 20;

// copy(i) for i in [0, n), on up to `threads` threads when the blocks are large.
template <typename Copy>
void ParallelCopies(int64_t n, int64_t block_bytes, int threads, Copy copy) {
  const int used = n * block_bytes >= kParallelCopyBytes ? static_cast<int>(std::min<int64_t>(n, threads)) : 1;
#pragma omp parallel for num_threads(used) schedule(static)
  for (int64_t i = 0; i < n; ++i) copy(i);
}

}  // namespace

absl::StatusOr<int64_t> CudaBlockCopier::Prepare(int64_t block_bytes) {
  const int64_t per_chunk = std::max<int64_t>(1, kChunkBytes / block_bytes);
  const size_t bytes = static_cast<size_t>(per_chunk * block_bytes);
  for (Chunk& chunk : chunks_) {
    if (!chunk.done) {
      STRATA_ASSIGN_OR_RETURN(chunk.done, kernels::CreateEvent(/*timing=*/false));
      STRATA_CUDA_RETURN_IF_ERROR(cudaEventRecord(chunk.done.get(), stream_));
    }
    if (chunk.device.bytes() >= bytes) continue;
    STRATA_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(chunk.done.get()));
    STRATA_ASSIGN_OR_RETURN(chunk.device, kernels::DeviceBuffer::Allocate(bytes));
    STRATA_ASSIGN_OR_RETURN(chunk.pinned, kernels::PinnedBuffer::Allocate(bytes));
  }
  return per_chunk;
}

absl::Status CudaBlockCopier::ToHost(const void* pool, const int32_t* block_ids, int64_t block_bytes,
                                     absl::Span<std::byte* const> host) {
  const int64_t count = static_cast<int64_t>(host.size());
  if (count == 0) return absl::OkStatus();
  STRATA_ASSIGN_OR_RETURN(const int64_t per_chunk, Prepare(block_bytes));
  // The chunk whose bytes wait in pinned memory, copied out while the next one transfers.
  auto drain = [&](int64_t first, int64_t n) -> absl::Status {
    Chunk& chunk = ChunkOf(first, per_chunk);
    STRATA_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(chunk.done.get()));
    const std::byte* pinned = chunk.pinned.data<std::byte>();
    ParallelCopies(n, block_bytes, kHostThreads,
                   [&](int64_t i) { std::memcpy(host[first + i], pinned + i * block_bytes, block_bytes); });
    return absl::OkStatus();
  };
  int64_t pending_first = -1, pending_count = 0;
  for (int64_t first = 0; first < count; first += per_chunk) {
    const int64_t n = std::min(per_chunk, count - first);
    Chunk& chunk = ChunkOf(first, per_chunk);
    STRATA_RETURN_IF_ERROR(
        kernels::CopyBlocks(pool, block_ids + first, chunk.device.data(), nullptr, n, block_bytes, stream_));
    STRATA_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(chunk.pinned.data(), chunk.device.data(), n * block_bytes, cudaMemcpyDeviceToHost, stream_));
    STRATA_CUDA_RETURN_IF_ERROR(cudaEventRecord(chunk.done.get(), stream_));
    if (pending_first >= 0) STRATA_RETURN_IF_ERROR(drain(pending_first, pending_count));
    pending_first = first;
    pending_count = n;
  }
  return drain(pending_first, pending_count);
}

absl::Status CudaBlockCopier::FromHost(absl::Span<const std::byte* const> host, void* pool, const int32_t* block_ids,
                                       int64_t block_bytes) {
  const int64_t count = static_cast<int64_t>(host.size());
  if (count == 0) return absl::OkStatus();
  STRATA_ASSIGN_OR_RETURN(const int64_t per_chunk, Prepare(block_bytes));
  for (int64_t first = 0; first < count; first += per_chunk) {
    const int64_t n = std::min(per_chunk, count - first);
    Chunk& chunk = ChunkOf(first, per_chunk);
    // The chunk's previous transfer (two chunks back) must be done before its pinned bytes change.
    STRATA_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(chunk.done.get()));
    std::byte* pinned = chunk.pinned.data<std::byte>();
    ParallelCopies(n, block_bytes, kHostThreads,
                   [&](int64_t i) { std::memcpy(pinned + i * block_bytes, host[first + i], block_bytes); });
    STRATA_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(chunk.device.data(), chunk.pinned.data(), n * block_bytes, cudaMemcpyHostToDevice, stream_));
    STRATA_RETURN_IF_ERROR(
        kernels::CopyBlocks(chunk.device.data(), nullptr, pool, block_ids + first, n, block_bytes, stream_));
    STRATA_CUDA_RETURN_IF_ERROR(cudaEventRecord(chunk.done.get(), stream_));
  }
  for (Chunk& chunk : chunks_) STRATA_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(chunk.done.get()));
  return absl::OkStatus();
}

}  // namespace strata::engine
