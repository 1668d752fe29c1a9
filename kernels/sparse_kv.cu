#include "kernels/sparse_kv.h"

#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <cmath>

#include "common/strings.h"
#include "kernels/cuda_status.h"
#include "kernels/device_types.cuh"
#include "kernels/dispatch.h"

namespace strata::kernels {
namespace {

constexpr int kBoundsThreads = 128;
constexpr int kScoreThreads = 256;  // 8 warps, one chunk each at a time
constexpr int kSelectThreads = 1024;
constexpr int kGatherThreads = 256;
constexpr int kMaxHeadDim = 256;
constexpr int kMaxDimsPerLane = kMaxHeadDim / kWarpSize;

// Chunk bounds. Grid: x = chunks touched by the rows, y = KV heads; block: kBoundsThreads threads, one
// column at a time. Each thread reads its column over the chunk's rows in the range (widening the stored
// bounds when the chunk started before it). Bytes: rows * head_dim * sizeof(T) read per head, plus the
// touched bounds; no FLOPs beyond comparisons. Exact: min and max of stored values.
template <typename T>
__global__ void UpdateKeyBoundsKernel(const T* __restrict__ k, int64_t capacity, int head_dim, int64_t first,
                                      int64_t end, int64_t chunk_tokens, int64_t first_chunk, int64_t num_chunks,
                                      T* __restrict__ bounds) {
  const int64_t chunk = first_chunk + blockIdx.x, head = blockIdx.y;
  const int64_t chunk_begin = chunk * chunk_tokens;
  const int64_t from = chunk_begin > first ? chunk_begin : first;
  const int64_t to = chunk_begin + chunk_tokens < end ? chunk_begin + chunk_tokens : end;
  T* row = bounds + (head * num_chunks + chunk) * 2 * head_dim;
  const T* keys = k + head * capacity * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float lo = INFINITY, hi = -INFINITY;
    if (chunk_begin < first) {
      lo = ToFloat(row[d]);
      hi = ToFloat(row[head_dim + d]);
    }
    for (int64_t t = from; t < to; ++t) {
      const float x = ToFloat(keys[t * head_dim + d]);
      lo = fminf(lo, x);
      hi = fmaxf(hi, x);
    }
    row[d] = FromFloat<T>(lo);
    row[head_dim + d] = FromFloat<T>(hi);
  }
}

// Chunk scores. Grid: x strides the candidate chunks (a warp per chunk), y = KV heads; block:
// kScoreThreads. The head's query group is staged in shared memory as float; lane l handles columns l,
// l + 32, ...; per query head a warp sum, then the maximum over the group. Sink chunks score +inf.
// Bytes: candidates * 2 * head_dim * sizeof(T) per KV head; FLOPs 4 * group * head_dim per chunk.
template <typename T>
__global__ void ScoreChunksKernel(const T* __restrict__ q, const T* __restrict__ bounds, int group, int head_dim,
                                  int64_t num_chunks, int64_t candidates, int64_t sink, float* __restrict__ scores) {
  extern __shared__ float q_group[];  // [group * head_dim]
  const int64_t kv = blockIdx.y;
  for (int i = threadIdx.x; i < group * head_dim; i += blockDim.x) q_group[i] = ToFloat(q[kv * group * head_dim + i]);
  __syncthreads();
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize, warps = blockDim.x / kWarpSize;
  for (int64_t c = int64_t{blockIdx.x} * warps + warp; c < candidates; c += int64_t{gridDim.x} * warps) {
    const T* row = bounds + (kv * num_chunks + c) * 2 * head_dim;
    float lo[kMaxDimsPerLane], hi[kMaxDimsPerLane];
#pragma unroll
    for (int j = 0; j < kMaxDimsPerLane; ++j) {
      const int d = lane + j * kWarpSize;
      lo[j] = d < head_dim ? ToFloat(row[d]) : 0.0f;
      hi[j] = d < head_dim ? ToFloat(row[head_dim + d]) : 0.0f;
    }
    float best = -INFINITY;
    for (int g = 0; g < group; ++g) {
      float bound = 0.0f;
#pragma unroll
      for (int j = 0; j < kMaxDimsPerLane; ++j) {
        const int d = lane + j * kWarpSize;
        if (d < head_dim) {
          const float x = q_group[g * head_dim + d];
          bound += fmaxf(x * lo[j], x * hi[j]);
        }
      }
      best = fmaxf(best, WarpSum(bound));
    }
    if (lane == 0) scores[kv * candidates + c] = c < sink ? INFINITY : best;
  }
}

// A float's bits as an unsigned key with the same order (larger float, larger key).
__device__ __forceinline__ uint32_t OrderedKey(float x) {
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);
}

// Top-`select` chunks of one KV head, in ascending id order. Grid: one block per KV head; block:
// kSelectThreads. A radix select (four 8-bit passes with a shared histogram) finds the select-th largest
// key T and how many keys equal to T to keep; then each thread owns a contiguous range of ids, and two
// block scans (keys equal to T, then kept ids) give every thread its output offset, so ids come out in
// order. Bytes: about 6 reads of candidates * 4 per head.
__global__ void SelectTopKernel(const float* __restrict__ all_scores, int64_t candidates, int64_t select,
                                int32_t* __restrict__ chunk_ids) {
  using Scan = cub::BlockScan<int, kSelectThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ int histogram[256];
  __shared__ uint32_t shared_prefix;
  __shared__ int shared_remaining;
  const float* scores = all_scores + blockIdx.x * candidates;
  int32_t* out = chunk_ids + blockIdx.x * select;
  if (select >= candidates) {
    for (int64_t i = threadIdx.x; i < candidates; i += blockDim.x) out[i] = static_cast<int32_t>(i);
    return;
  }
  uint32_t prefix = 0, mask = 0;
  int remaining = static_cast<int>(select);
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) histogram[i] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < candidates; i += blockDim.x) {
      const uint32_t key = OrderedKey(scores[i]);
      if ((key & mask) == prefix) atomicAdd(&histogram[(key >> shift) & 0xFFu], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int above = 0, bin = 255;
      for (; bin > 0; --bin) {
        if (above + histogram[bin] >= remaining) break;
        above += histogram[bin];
      }
      shared_prefix = prefix | (static_cast<uint32_t>(bin) << shift);
      shared_remaining = remaining - above;
    }
    __syncthreads();
    prefix = shared_prefix;
    remaining = shared_remaining;
    mask |= 0xFFu << shift;
  }
  const uint32_t threshold = prefix;  // keep every key above it and the first `remaining` equal to it
  const int64_t per_thread = (candidates + blockDim.x - 1) / blockDim.x;
  const int64_t begin = threadIdx.x * per_thread;
  const int64_t end = begin + per_thread < candidates ? begin + per_thread : candidates;
  int greater = 0, equal = 0;
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t key = OrderedKey(scores[i]);
    greater += key > threshold;
    equal += key == threshold;
  }
  int equal_before = 0;
  Scan(scan_storage).ExclusiveSum(equal, equal_before);
  __syncthreads();
  int equal_taken = remaining - equal_before;
  equal_taken = equal_taken < 0 ? 0 : (equal_taken > equal ? equal : equal_taken);
  int offset = 0;
  Scan(scan_storage).ExclusiveSum(greater + equal_taken, offset);
  int equal_seen = equal_before;
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t key = OrderedKey(scores[i]);
    if (key > threshold) {
      out[offset++] = static_cast<int32_t>(i);
    } else if (key == threshold) {
      if (equal_seen < remaining) out[offset++] = static_cast<int32_t>(i);
      ++equal_seen;
    }
  }
}

// Chunk gather. Grid: x = the head's chosen chunks then its tail in pieces of chunk_tokens rows, y = KV
// heads, z = K or V; block: kGatherThreads threads striding the piece in units U (16-byte vectors when
// aligned). Sources may be page-locked host memory, read over PCIe by these loads: many blocks in flight
// keep the bus busy without a copy-engine command per chunk. Bytes: read and write of 2 * num_kv_heads *
// (select * chunk_tokens + tail_rows) rows.
template <typename U>
__global__ void GatherChunksKernel(ChunkSources sources, const int32_t* __restrict__ chunk_ids, int64_t select,
                                   int64_t chunk_tokens, int64_t tail_rows, int64_t units_per_row, U* k_out, U* v_out,
                                   int64_t out_capacity) {
  const int head = blockIdx.y;
  const bool value = blockIdx.z == 1;
  const int64_t item = blockIdx.x;
  const U* from;
  int64_t rows, dst_row;
  if (item < select) {
    const int64_t chunk = chunk_ids[head * select + item];
    from = static_cast<const U*>(value ? sources.v[head] : sources.k[head]) + chunk * chunk_tokens * units_per_row;
    rows = chunk_tokens;
    dst_row = item * chunk_tokens;
  } else {
    const int64_t piece_begin = (item - select) * chunk_tokens;
    from = static_cast<const U*>(value ? sources.v_tail[head] : sources.k_tail[head]) + piece_begin * units_per_row;
    rows = tail_rows - piece_begin < chunk_tokens ? tail_rows - piece_begin : chunk_tokens;
    dst_row = select * chunk_tokens + piece_begin;
  }
  U* to = (value ? v_out : k_out) + (head * out_capacity + dst_row) * units_per_row;
  for (int64_t u = threadIdx.x; u < rows * units_per_row; u += blockDim.x) to[u] = from[u];
}

}  // namespace

absl::Status UpdateKeyBounds(DType dtype, const void* k, int64_t num_kv_heads, int64_t capacity_tokens,
                             int64_t head_dim, int64_t first, int64_t rows, int64_t chunk_tokens, int64_t num_chunks,
                             void* bounds, cudaStream_t stream) {
  if (num_kv_heads <= 0 || num_kv_heads > 65535 || head_dim <= 0 || head_dim > kMaxHeadDim || chunk_tokens <= 0 ||
      first < 0 || rows < 0 || first + rows > capacity_tokens || num_chunks * chunk_tokens < first + rows) {
    return absl::InvalidArgumentError(StrCat("UpdateKeyBounds: rows [", first, ", ", first + rows, ") of ",
                                             num_kv_heads, " heads of ", head_dim, " (capacity ", capacity_tokens,
                                             ") in ", num_chunks, " chunks of ", chunk_tokens));
  }
  if (rows == 0) return absl::OkStatus();
  if (k == nullptr || bounds == nullptr) return absl::InvalidArgumentError("UpdateKeyBounds: null keys or bounds");
  const int64_t first_chunk = first / chunk_tokens;
  const int64_t chunks = (first + rows - 1) / chunk_tokens - first_chunk + 1;
  return DispatchActivation(dtype, "UpdateKeyBounds", [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    UpdateKeyBoundsKernel<T><<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(num_kv_heads)),
                               kBoundsThreads, 0, stream>>>(static_cast<const T*>(k), capacity_tokens,
                                                            static_cast<int>(head_dim), first, first + rows,
                                                            chunk_tokens, first_chunk, num_chunks, static_cast<T*>(bounds));
    STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("UpdateKeyBoundsKernel");
    return absl::OkStatus();
  });
}

absl::Status SelectChunks(DType dtype, const void* q, const void* bounds, const ChunkSelection& s, float* scores,
                          int32_t* chunk_ids, cudaStream_t stream) {
  if (s.num_kv_heads <= 0 || s.num_kv_heads > 65535 || s.num_heads % s.num_kv_heads != 0 || s.head_dim <= 0 ||
      s.head_dim > kMaxHeadDim || s.candidates < 0 || s.candidates > s.num_chunks ||
      s.candidates > int64_t{1} << 30 || s.select < 0 || s.select > s.candidates || s.sink_chunks < 0 ||
      s.sink_chunks > s.select) {
    return absl::InvalidArgumentError(StrCat("SelectChunks: ", s.select, " of ", s.candidates, " candidate chunks (",
                                             s.sink_chunks, " sinks, ", s.num_chunks, " per head) for ", s.num_heads,
                                             " query heads over ", s.num_kv_heads, " KV heads of ", s.head_dim));
  }
  if (s.select == 0) return absl::OkStatus();
  if (q == nullptr || bounds == nullptr || scores == nullptr || chunk_ids == nullptr) {
    return absl::InvalidArgumentError("SelectChunks: null query, bounds, scores or chunk ids");
  }
  const int group = static_cast<int>(s.num_heads / s.num_kv_heads);
  return DispatchActivation(dtype, "SelectChunks", [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    if (s.select < s.candidates) {
      const int64_t warps = kScoreThreads / kWarpSize;
      const int64_t blocks = std::min<int64_t>((s.candidates + warps - 1) / warps, 1024);
      const size_t shared = static_cast<size_t>(group) * s.head_dim * sizeof(float);
      ScoreChunksKernel<T><<<dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(s.num_kv_heads)),
                             kScoreThreads, shared, stream>>>(static_cast<const T*>(q), static_cast<const T*>(bounds),
                                                              group, static_cast<int>(s.head_dim), s.num_chunks,
                                                              s.candidates, s.sink_chunks, scores);
      STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("ScoreChunksKernel");
    }
    SelectTopKernel<<<static_cast<unsigned>(s.num_kv_heads), kSelectThreads, 0, stream>>>(scores, s.candidates,
                                                                                           s.select, chunk_ids);
    STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("SelectTopKernel");
    return absl::OkStatus();
  });
}

absl::Status GatherChunks(DType dtype, const ChunkSources& sources, int64_t num_kv_heads, int64_t head_dim,
                          const int32_t* chunk_ids, int64_t select, int64_t chunk_tokens, int64_t tail_rows,
                          void* k_out, void* v_out, int64_t out_capacity, cudaStream_t stream) {
  if (num_kv_heads <= 0 || num_kv_heads > ChunkSources::kMaxKvHeads || head_dim <= 0 || chunk_tokens <= 0 ||
      select < 0 || tail_rows < 0 || select * chunk_tokens + tail_rows > out_capacity) {
    return absl::InvalidArgumentError(StrCat("GatherChunks: ", select, " chunks of ", chunk_tokens, " and ", tail_rows,
                                             " tail rows of ", num_kv_heads, " heads of ", head_dim, " into ",
                                             out_capacity, " rows per head"));
  }
  const int64_t tail_pieces = (tail_rows + chunk_tokens - 1) / chunk_tokens;
  if (select + tail_pieces == 0) return absl::OkStatus();
  if (k_out == nullptr || v_out == nullptr || (select > 0 && chunk_ids == nullptr)) {
    return absl::InvalidArgumentError("GatherChunks: null outputs or chunk ids");
  }
  bool aligned = Aligned16(k_out) && Aligned16(v_out);
  for (int64_t h = 0; h < num_kv_heads; ++h) {
    for (const void* p : {sources.k[h], sources.v[h], sources.k_tail[h], sources.v_tail[h]}) {
      if (p == nullptr && (select > 0 || tail_rows > 0)) {
        return absl::InvalidArgumentError(StrCat("GatherChunks: no source rows for head ", h));
      }
      aligned = aligned && Aligned16(p);
    }
  }
  return DispatchActivation(dtype, "GatherChunks", [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    const dim3 grid(static_cast<unsigned>(select + tail_pieces), static_cast<unsigned>(num_kv_heads), 2);
    if (aligned && head_dim * sizeof(T) % sizeof(uint4) == 0) {
      GatherChunksKernel<uint4><<<grid, kGatherThreads, 0, stream>>>(
          sources, chunk_ids, select, chunk_tokens, tail_rows, head_dim * sizeof(T) / sizeof(uint4),
          static_cast<uint4*>(k_out), static_cast<uint4*>(v_out), out_capacity);
    } else {
      GatherChunksKernel<T><<<grid, kGatherThreads, 0, stream>>>(sources, chunk_ids, select, chunk_tokens, tail_rows,
                                                                 head_dim, static_cast<T*>(k_out),
                                                                 static_cast<T*>(v_out), out_capacity);
    }
    STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("GatherChunksKernel");
    return absl::OkStatus();
  });
}

}  // namespace strata::kernels
