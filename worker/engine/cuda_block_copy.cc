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

// Whether `p` is page-locked host memory that the device can DMA to and from.
absl::StatusOr<bool> IsPageLocked(const void* p) {
  cudaPointerAttributes attributes{};
  STRATA_CUDA_RETURN_IF_ERROR(cudaPointerGetAttributes(&attributes, p));
  return attributes.type == cudaMemoryTypeHost;
}

}  // namespace

absl::StatusOr<CudaBlockCopier::Split> CudaBlockCopier::SplitByMemory(absl::Span<const int32_t> blocks,
                                                                      absl::Span<std::byte* const> host) {
  Split split;
  for (size_t i = 0; i < blocks.size(); ++i) {
    STRATA_ASSIGN_OR_RETURN(const bool page_locked, IsPageLocked(host[i]));
    (page_locked ? split.direct_blocks : split.staged_blocks).push_back(blocks[i]);
    (page_locked ? split.direct_host : split.staged_host).push_back(host[i]);
  }
  return split;
}

absl::Status CudaBlockCopier::CopyDirect(const Split& split, std::byte* pool, int64_t block_bytes,
                                         cudaMemcpyKind kind) {
  // A run: adjacent pool blocks whose host payloads are evenly spaced (adjacent, or in the equal slots of a
  // payload pool, whose trailers sit between them): one DMA, 2-D where the host side has a pitch.
  const size_t n = split.direct_blocks.size();
  const std::vector<std::byte*>& host = split.direct_host;
  for (size_t first = 0, end = 0; first < n; first = end) {
    const ptrdiff_t pitch = first + 1 < n ? host[first + 1] - host[first] : block_bytes;
    for (end = first + 1; end < n && split.direct_blocks[end] == split.direct_blocks[end - 1] + 1 &&
                          pitch >= block_bytes && host[end] - host[end - 1] == pitch;
         ++end) {
    }
    std::byte* device = pool + split.direct_blocks[first] * block_bytes;
    const size_t width = static_cast<size_t>(block_bytes), rows = end - first;
    const size_t host_pitch = rows > 1 ? static_cast<size_t>(pitch) : width;
    if (host_pitch == width) {
      STRATA_CUDA_RETURN_IF_ERROR(kind == cudaMemcpyDeviceToHost
                                      ? cudaMemcpyAsync(host[first], device, rows * width, kind, stream_)
                                      : cudaMemcpyAsync(device, host[first], rows * width, kind, stream_));
    } else {
      STRATA_CUDA_RETURN_IF_ERROR(
          kind == cudaMemcpyDeviceToHost
              ? cudaMemcpy2DAsync(host[first], host_pitch, device, width, width, rows, kind, stream_)
              : cudaMemcpy2DAsync(device, width, host[first], host_pitch, width, rows, kind, stream_));
    }
  }
  return absl::OkStatus();
}

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

absl::StatusOr<const int32_t*> CudaBlockCopier::UploadIds(absl::Span<const int32_t> blocks) {
  const size_t bytes = blocks.size() * sizeof(int32_t);
  // Every call ends synchronized, so nothing on the stream still reads the old ids.
  if (ids_.bytes() < bytes) {
    STRATA_ASSIGN_OR_RETURN(ids_, kernels::DeviceBuffer::Allocate(bytes));
  }
  // From pageable memory: the call returns once the source has been staged, so `blocks` may go.
  STRATA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ids_.data(), blocks.data(), bytes, cudaMemcpyHostToDevice, stream_));
  return ids_.data<const int32_t>();
}

absl::Status CudaBlockCopier::ToHost(const void* pool, absl::Span<const int32_t> blocks, int64_t block_bytes,
                                     absl::Span<std::byte* const> host) {
  if (blocks.empty()) return absl::OkStatus();
  STRATA_ASSIGN_OR_RETURN(const Split split, SplitByMemory(blocks, host));
  STRATA_RETURN_IF_ERROR(CopyDirect(split, static_cast<std::byte*>(const_cast<void*>(pool)), block_bytes,
                                    cudaMemcpyDeviceToHost));
  // The staged copies wait for their own chunks; the direct ones are before them on the stream.
  if (!split.staged_blocks.empty()) {
    return StagedToHost(pool, split.staged_blocks, block_bytes, split.staged_host);
  }
  return Finish();
}

absl::Status CudaBlockCopier::FromHost(absl::Span<const std::byte* const> host, void* pool,
                                       absl::Span<const int32_t> blocks, int64_t block_bytes) {
  if (blocks.empty()) return absl::OkStatus();
  // The split holds mutable pointers for both directions; FromHost only reads through them.
  std::vector<std::byte*> mutable_host(host.size());
  std::transform(host.begin(), host.end(), mutable_host.begin(), [](const std::byte* p) { return const_cast<std::byte*>(p); });
  STRATA_ASSIGN_OR_RETURN(const Split split, SplitByMemory(blocks, mutable_host));
  STRATA_RETURN_IF_ERROR(CopyDirect(split, static_cast<std::byte*>(pool), block_bytes, cudaMemcpyHostToDevice));
  if (!split.staged_blocks.empty()) {
    STRATA_RETURN_IF_ERROR(StagedFromHost(split.staged_host, pool, split.staged_blocks, block_bytes));
  }
  return Finish();
}

absl::Status CudaBlockCopier::Finish() {
  if (!done_) {
    STRATA_ASSIGN_OR_RETURN(done_, kernels::CreateEvent(/*timing=*/false));
  }
  STRATA_CUDA_RETURN_IF_ERROR(cudaEventRecord(done_.get(), stream_));
  STRATA_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(done_.get()));
  return absl::OkStatus();
}

absl::Status CudaBlockCopier::StagedToHost(const void* pool, absl::Span<const int32_t> blocks, int64_t block_bytes,
                                           absl::Span<std::byte* const> host) {
  const int64_t count = static_cast<int64_t>(host.size());
  STRATA_ASSIGN_OR_RETURN(const int64_t per_chunk, Prepare(block_bytes));
  STRATA_ASSIGN_OR_RETURN(const int32_t* block_ids, UploadIds(blocks));
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

absl::Status CudaBlockCopier::StagedFromHost(absl::Span<std::byte* const> host, void* pool,
                                             absl::Span<const int32_t> blocks, int64_t block_bytes) {
  const int64_t count = static_cast<int64_t>(host.size());
  STRATA_ASSIGN_OR_RETURN(const int64_t per_chunk, Prepare(block_bytes));
  STRATA_ASSIGN_OR_RETURN(const int32_t* block_ids, UploadIds(blocks));
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
  return absl::OkStatus();
}

}  // namespace strata::engine
