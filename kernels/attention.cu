// Split-KV (flash-decoding) attention, the chunk merge, argument checks and the dispatch point. The
// tensor-core prefill kernel lives in flash_attention.cu.
#include <cmath>
#include <limits>
#include <type_traits>

#include <mutex>

#include "common/log.h"
#include "common/strings.h"
#include "kernels/attention.h"
#include "kernels/cuda_status.h"
#include "kernels/cudnn_attention.h"
#include "kernels/device_types.cuh"
#include "kernels/dispatch.h"
#include "kernels/kv_rows.cuh"

namespace strata::kernels {
namespace {

constexpr int kSplitWarps = 4;
constexpr int kSplitThreads = kSplitWarps * kWarpSize;
constexpr int kMaxHeadDim = 256;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
// Keys each split should at least cover: below this, the merge costs more than the parallelism gains.
constexpr int64_t kMinKeysPerSplit = 128;
constexpr int kMaxSplits = 128;

struct KeyRange {
  int64_t begin, end;  // absolute positions
};

__host__ __device__ inline KeyRange VisibleKeys(const AttentionArgs& a, int64_t row) {
  const int64_t position = a.first_position + row;
  int64_t begin = a.kv_begin;
  if (a.window > 0 && position - a.window + 1 > begin) begin = position - a.window + 1;
  const int64_t end = position + 1 < a.kv_end ? position + 1 : a.kv_end;
  return {begin, end};
}

// Split-KV attention. Grid: x = rows * num_heads (one (row, head) pair each), y = splits, z = batch. Block: 4
// warps; each warp walks every 4th key of the block's split, kUnroll keys at a time, lanes holding kPerLane
// consecutive elements of head_dim (lanes past head_dim hold zeros); key rows come from KeyRows<T, kLayout>
// (contiguous or paged, one instantiation each); the warps' online softmax states merge through shared memory.
// Writes the normalized output and LSE of the split, to `out`/`lse` directly when splits == 1, else to
// float32 partials [batch][split][rows*heads][head_dim] and [batch][split][rows*heads] for MergeSplitsKernel.
// Bytes: ~2 * keys * head_dim * sizeof(T) per (row, head) (K and V read once; query heads of one group share
// them through L2); FLOPs 4 * keys * head_dim per (row, head). Precision: T inputs, float32 scores, softmax
// and accumulation.
template <typename T, int kPerLane, KvLayout kLayout>
__global__ void __launch_bounds__(kSplitThreads) SplitKvKernel(AttentionArgs a, float* partial_out,
                                                               float* partial_lse) {
  const int64_t batch = blockIdx.z;
  ApplyPositions(a, batch);
  constexpr int kUnroll = 4;
  __shared__ float warp_max[kSplitWarps], warp_sum[kSplitWarps];
  __shared__ float warp_acc[kSplitWarps][kWarpSize * kPerLane];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int64_t pair = blockIdx.x, row = pair / a.num_heads, head = pair % a.num_heads;
  const int splits = gridDim.y, split = blockIdx.y;
  const int64_t kv_head = head / (a.num_heads / a.num_kv_heads);
  const int hd = static_cast<int>(a.head_dim);

  const KeyRange keys = VisibleKeys(a, row);
  const int64_t total = keys.end > keys.begin ? keys.end - keys.begin : 0;
  const int64_t per_split = (total + splits - 1) / splits;
  const int64_t split_begin = keys.begin + split * per_split;
  int64_t split_end = split_begin + per_split;
  if (split_end > keys.end) split_end = keys.end;

  const T* q = static_cast<const T*>(a.q) + batch * a.q_batch_stride + row * a.q_row_stride + head * hd;
  const KeyRows<T, kLayout> key_rows = KeyRowsOf<T, kLayout>(a, batch, kv_head, hd);
  const int d0 = lane * kPerLane;
  const bool active = d0 < hd;  // head_dim is a multiple of kPerLane (checked by the launcher)

  const float score_scale = a.scale * kLog2e;  // scores in log2 units: exp2 replaces exp
  float qv[kPerLane], acc[kPerLane];
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    qv[e] = active ? ToFloat(q[d0 + e]) * score_scale : 0.0f;
    acc[e] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int64_t base = split_begin + warp; base < split_end; base += kSplitWarps * kUnroll) {
    float s[kUnroll];
    int64_t key_row[kUnroll];  // kept for the V pass only where it is a block-table walk (paged)
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = base + u * kSplitWarps;
      float dot = 0.0f;
      key_row[u] = 0;
      if (active && j < split_end) {
        key_row[u] = key_rows.Offset(a, j, hd);
        const T* kr = key_rows.k + key_row[u] + d0;
#pragma unroll
        for (int e = 0; e < kPerLane; ++e) dot += qv[e] * ToFloat(kr[e]);
      }
      s[u] = dot;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) s[u] = WarpSum(s[u]);
    float tile_max = -INFINITY;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base + u * kSplitWarps >= split_end) s[u] = -INFINITY;
      tile_max = fmaxf(tile_max, s[u]);
    }
    const float m_new = fmaxf(m, tile_max);
    const float correction = exp2f(m - m_new);  // m_new is finite: base < split_end
    l *= correction;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) acc[e] *= correction;
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = base + u * kSplitWarps;
      const float p = exp2f(s[u] - m_new);
      l += p;
      if (active && j < split_end) {
        const T* vr = key_rows.v + (KeyRows<T, kLayout>::kPaged ? key_row[u] : key_rows.Offset(a, j, hd)) + d0;
#pragma unroll
        for (int e = 0; e < kPerLane; ++e) acc[e] += p * ToFloat(vr[e]);
      }
    }
    m = m_new;
  }
  // Merge the four warps' states.
  if (lane == 0) {
    warp_max[warp] = m;
    warp_sum[warp] = l;
  }
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) warp_acc[warp][d0 + e] = acc[e];
  __syncthreads();
  if (warp != 0) return;
  float m_all = -INFINITY;
#pragma unroll
  for (int w = 0; w < kSplitWarps; ++w) m_all = fmaxf(m_all, warp_max[w]);
  float l_all = 0.0f, o[kPerLane] = {};
  if (m_all != -INFINITY) {
#pragma unroll
    for (int w = 0; w < kSplitWarps; ++w) {
      const float f = exp2f(warp_max[w] - m_all);
      l_all += warp_sum[w] * f;
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) o[e] += warp_acc[w][d0 + e] * f;
    }
  }
  const float inv = l_all > 0.0f ? 1.0f / l_all : 0.0f;
  const float lse = l_all > 0.0f ? (m_all + log2f(l_all)) * kLn2 : -INFINITY;
  if (partial_out == nullptr) {
    if (active) {
      T* out = static_cast<T*>(a.out) + batch * a.out_batch_stride + row * a.out_row_stride + head * hd;
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) out[d0 + e] = FromFloat<T>(o[e] * inv);
    }
    if (a.lse != nullptr && lane == 0) a.lse[(batch * a.num_heads + head) * a.rows + row] = lse;
  } else {
    const int64_t pairs = a.rows * a.num_heads;
    const int64_t slot = (batch * splits + split) * pairs + pair;
    if (active) {
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) partial_out[slot * hd + d0 + e] = o[e] * inv;
    }
    if (lane == 0) partial_lse[slot] = lse;
  }
}

// Flash-decoding for grouped-query attention: one block serves all `group` query heads that share a KV head,
// so each key and value is read from memory once, not once per query head. Grid: x = rows * num_kv_heads, y =
// splits, z = batch. Block: 4 warps; each warp takes chunks of 32 keys, one key per lane: the lane reads its
// key row in 16-byte vectors and forms the group's dot products against the queries in shared memory (no
// shuffles per key); the online softmax takes one warp max per chunk and head; P·V broadcasts each key's
// probabilities by shuffle while lanes hold kPerLane consecutive elements of head_dim and read the value row
// coalesced (in a paged cache the row's offset too, from the lane that resolved it through the block table).
// The warps' states merge through shared memory. Output as SplitKvKernel (direct or float32 partials for
// MergeSplitsKernel). Bytes: K and V of the split once per block (2 * keys * head_dim * sizeof(T)); FLOPs 4 *
// keys * head_dim per query head. Precision: T inputs, float32 scores, softmax and accumulation.
constexpr int kLargestGroup = 8;

template <typename T, int kPerLane, int kMaxGroupHere, KvLayout kLayout>
__global__ void __launch_bounds__(kSplitThreads) GroupedDecodeKernel(AttentionArgs a, float* partial_out,
                                                                     float* partial_lse) {
  // Per-thread state is sized for kMaxGroupHere (the group rounded up to a power of two), so a GQA
  // ratio of 4 does not pay registers for 8 heads: fewer registers, more blocks resident per SM.
  constexpr int kMaxGroup = kMaxGroupHere;
  const int64_t batch = blockIdx.z;
  ApplyPositions(a, batch);
  extern __shared__ float shared[];  // q [group][head_dim], then warp accumulators [warps][group][head_dim]
  __shared__ float warp_max[kSplitWarps][kMaxGroup], warp_sum[kSplitWarps][kMaxGroup];
  constexpr int kVec = kVecElements<T>;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int group = static_cast<int>(a.num_heads / a.num_kv_heads);
  const int hd = static_cast<int>(a.head_dim);
  const int64_t row = blockIdx.x / a.num_kv_heads, kv_head = blockIdx.x % a.num_kv_heads;
  const int splits = gridDim.y, split = blockIdx.y;
  float* q_shared = shared;
  float* acc_shared = shared + group * hd;

  const KeyRange keys = VisibleKeys(a, row);
  const int64_t total = keys.end > keys.begin ? keys.end - keys.begin : 0;
  const int64_t per_split = (total + splits - 1) / splits;
  const int64_t split_begin = keys.begin + split * per_split;
  const int64_t split_end = split_begin + per_split < keys.end ? split_begin + per_split : keys.end;

  const float score_scale = a.scale * kLog2e;
  const T* q = static_cast<const T*>(a.q) + batch * a.q_batch_stride + row * a.q_row_stride + kv_head * group * hd;
  for (int i = threadIdx.x; i < group * hd; i += blockDim.x) q_shared[i] = ToFloat(q[i]) * score_scale;
  __syncthreads();

  const KeyRows<T, kLayout> key_rows = KeyRowsOf<T, kLayout>(a, batch, kv_head, hd);
  const int d0 = lane * kPerLane;
  const bool active = d0 < hd;

  float acc[kMaxGroup][kPerLane], m[kMaxGroup], l[kMaxGroup];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) acc[g][e] = 0.0f;
  }
  for (int64_t chunk = split_begin + warp * kWarpSize; chunk < split_end; chunk += kSplitWarps * kWarpSize) {
    const int64_t j = chunk + lane;
    const bool valid = j < split_end;
    // In a paged cache the lane walks the block table for its key once, for K here and for V (by shuffle)
    // below; a contiguous row is a multiply-add, recomputed where used.
    constexpr bool kPaged = KeyRows<T, kLayout>::kPaged;
    const int64_t key_row = kPaged && valid ? key_rows.Offset(a, j, hd) : 0;
    float s[kMaxGroup];
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) s[g] = 0.0f;
    if (valid) {
      const T* kr = key_rows.k + (kPaged ? key_row : key_rows.Offset(a, j, hd));
#pragma unroll 2
      for (int d = 0; d < hd; d += kVec) {
        const Vec<T> kv = *reinterpret_cast<const Vec<T>*>(kr + d);
#pragma unroll
        for (int g = 0; g < kMaxGroup; ++g) {
          if (g < group) {
#pragma unroll
            for (int e = 0; e < kVec; ++e) s[g] += q_shared[g * hd + d + e] * ToFloat(kv.v[e]);
          }
        }
      }
    }
    float p[kMaxGroup];
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g >= group) continue;
      const float score = valid ? s[g] : -INFINITY;
      const float m_new = fmaxf(m[g], WarpMax(score));  // finite: lane 0's key is valid
      const float correction = exp2f(m[g] - m_new);
      p[g] = exp2f(score - m_new);
      l[g] = l[g] * correction + p[g];
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) acc[g][e] *= correction;
      m[g] = m_new;
    }
    const int keys_here = static_cast<int>(split_end - chunk < kWarpSize ? split_end - chunk : kWarpSize);
    for (int t = 0; t < keys_here; ++t) {
      float vf[kPerLane];
      int64_t value_row;
      if constexpr (kPaged) {
        value_row = __shfl_sync(0xffffffffu, key_row, t);
      } else {
        value_row = key_rows.Offset(a, chunk + t, hd);
      }
      const T* vr = key_rows.v + value_row + d0;
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) vf[e] = active ? ToFloat(vr[e]) : 0.0f;
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g >= group) continue;
        const float pg = __shfl_sync(0xffffffffu, p[g], t);
#pragma unroll
        for (int e = 0; e < kPerLane; ++e) acc[g][e] += pg * vf[e];
      }
    }
  }
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g >= group) continue;
    const float sum = WarpSum(l[g]);
    if (lane == 0) {
      warp_max[warp][g] = m[g];
      warp_sum[warp][g] = sum;
    }
    if (active) {
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) acc_shared[(warp * group + g) * hd + d0 + e] = acc[g][e];
    }
  }
  __syncthreads();
  const int64_t pairs = a.rows * a.num_heads;
  for (int i = threadIdx.x; i < group * hd; i += blockDim.x) {
    const int g = i / hd, d = i % hd;
    float m_all = -INFINITY;
#pragma unroll
    for (int w = 0; w < kSplitWarps; ++w) m_all = fmaxf(m_all, warp_max[w][g]);
    float l_all = 0.0f, o = 0.0f;
    if (m_all != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kSplitWarps; ++w) {
        const float f = exp2f(warp_max[w][g] - m_all);
        l_all += warp_sum[w][g] * f;
        o += acc_shared[(w * group + g) * hd + d] * f;
      }
    }
    const float value = l_all > 0.0f ? o / l_all : 0.0f;
    const float lse = l_all > 0.0f ? (m_all + log2f(l_all)) * kLn2 : -INFINITY;
    const int64_t head = kv_head * group + g;
    if (partial_out == nullptr) {
      T* out = static_cast<T*>(a.out) + batch * a.out_batch_stride + row * a.out_row_stride + head * hd;
      out[d] = FromFloat<T>(value);
      if (a.lse != nullptr && d == 0) a.lse[(batch * a.num_heads + head) * a.rows + row] = lse;
    } else {
      const int64_t slot = (batch * splits + split) * pairs + row * a.num_heads + head;
      partial_out[slot * hd + d] = value;
      if (d == 0) partial_lse[slot] = lse;
    }
  }
}

// Whether GroupedDecodeKernel serves `a`: groups of at most kLargestGroup heads, key rows in whole 16-byte
// vectors.
bool UsesGroupedDecode(const AttentionArgs& a) {
  return a.num_heads / a.num_kv_heads <= kLargestGroup && a.kv_begin >= 0 && KvRowsAligned16(a);
}

// Merges the splits of SplitKvKernel. Grid: x = rows * num_heads, y = batch; block: head_dim threads
// rounded up to a warp, one output element each. Bytes: splits * (head_dim + 1) * 4 read + head_dim *
// sizeof(T) written per (row, head).
template <typename T>
__global__ void MergeSplitsKernel(AttentionArgs a, int splits, const float* partial_out, const float* partial_lse) {
  const int64_t pair = blockIdx.x, row = pair / a.num_heads, head = pair % a.num_heads, batch = blockIdx.y;
  const int64_t pairs = a.rows * a.num_heads;
  const int d = threadIdx.x;
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, partial_lse[(batch * splits + s) * pairs + pair]);
  float sum = 0.0f, o = 0.0f;
  if (m != -INFINITY) {
    for (int s = 0; s < splits; ++s) {
      const int64_t slot = (batch * splits + s) * pairs + pair;
      const float w = expf(partial_lse[slot] - m);
      sum += w;
      if (d < a.head_dim) o += w * partial_out[slot * a.head_dim + d];
    }
  }
  if (d < a.head_dim) {
    T* out = static_cast<T*>(a.out) + batch * a.out_batch_stride + row * a.out_row_stride + head * a.head_dim;
    out[d] = FromFloat<T>(sum > 0.0f ? o / sum : 0.0f);
  }
  if (a.lse != nullptr && d == 0) {
    a.lse[(batch * a.num_heads + head) * a.rows + row] = sum > 0.0f ? m + logf(sum) : -INFINITY;
  }
}

// Chunk merge. Grid: x = rows * num_heads; block: head_dim threads rounded up to a warp. Every thread
// computes the pair's weights from the two LSEs; thread 0 writes the new LSE after the block has read
// the old one.
template <typename T>
__global__ void MergeChunkKernel(T* acc_out, float* acc_lse, const T* part_out, const float* part_lse, int64_t rows,
                                 int64_t num_heads, int64_t head_dim, int64_t row_stride) {
  const int64_t pair = blockIdx.x, row = pair / num_heads, head = pair % num_heads;
  const int64_t lse_index = head * rows + row;
  const float a = acc_lse[lse_index], b = part_lse[lse_index];
  const float m = fmaxf(a, b);
  float wa = 0.0f, wb = 0.0f, lse = -INFINITY;
  if (m != -INFINITY) {
    const float ea = expf(a - m), eb = expf(b - m);
    lse = m + logf(ea + eb);
    wa = ea / (ea + eb);
    wb = eb / (ea + eb);
  }
  const int d = threadIdx.x;
  if (d < head_dim) {
    const int64_t i = row * row_stride + head * head_dim + d;
    acc_out[i] = FromFloat<T>(wa * ToFloat(acc_out[i]) + wb * ToFloat(part_out[i]));
  }
  __syncthreads();  // every thread has read acc_lse
  if (d == 0) acc_lse[lse_index] = lse;
}

unsigned RoundUpToWarp(int64_t n) { return static_cast<unsigned>((n + kWarpSize - 1) / kWarpSize * kWarpSize); }

// The paged-KV part of ValidateAttention. PagedKeyRows splits positions into blocks with 32-bit arithmetic.
absl::Status ValidatePagedKv(const AttentionArgs& a) {
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  if (a.block_tokens <= 0 || a.block_tokens > kInt32Max || a.block_stride < a.num_kv_heads * a.block_tokens) {
    return absl::InvalidArgumentError(StrCat("Attention: paged KV blocks of ", a.block_tokens,
                                             " tokens at a stride of ", a.block_stride, " rows cannot hold ",
                                             a.num_kv_heads, " KV heads"));
  }
  if (a.kv_begin != 0 || a.kv_end > kInt32Max) {
    return absl::InvalidArgumentError(StrCat("Attention: paged KV covers keys [0, kv_end < 2^31), got [",
                                             a.kv_begin, ", ", a.kv_end, ")"));
  }
  if (a.block_table_stride < 0 || (a.batch > 1 && a.block_table_stride == 0)) {
    return absl::InvalidArgumentError(StrCat("Attention: a batch of ", a.batch,
                                             " needs a positive block_table_stride, got ", a.block_table_stride));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateAttention(const AttentionArgs& a) {
  if (a.q == nullptr || a.k == nullptr || a.v == nullptr || a.out == nullptr) {
    return absl::InvalidArgumentError("Attention: q, k, v and out are required");
  }
  if (a.rows < 0 || a.num_heads <= 0 || a.num_kv_heads <= 0 || a.num_heads % a.num_kv_heads != 0 ||
      a.head_dim <= 0 || a.head_dim > kMaxHeadDim || a.batch <= 0) {
    return absl::InvalidArgumentError(StrCat("Attention: ", a.num_heads, " query heads over ", a.num_kv_heads,
                                             " KV heads of width ", a.head_dim, ", ", a.rows, " rows, batch ",
                                             a.batch, " is not a supported shape (head_dim <= ", kMaxHeadDim, ")"));
  }
  if (a.q_row_stride < a.num_heads * a.head_dim || a.out_row_stride < a.num_heads * a.head_dim) {
    return absl::InvalidArgumentError(StrCat("Attention: row strides ", a.q_row_stride, "/", a.out_row_stride,
                                             " are shorter than ", a.num_heads, " heads of ", a.head_dim));
  }
  const bool paged = a.block_table != nullptr;
  if (a.kv_begin < 0 || a.kv_end < a.kv_begin || (!paged && a.kv_head_stride < a.kv_end - a.kv_begin) ||
      a.first_position < 0 || a.window < 0) {
    return absl::InvalidArgumentError(StrCat("Attention: key range [", a.kv_begin, ", ", a.kv_end,
                                             ") does not fit a head stride of ", a.kv_head_stride, " tokens"));
  }
  if (paged) STRATA_RETURN_IF_ERROR(ValidatePagedKv(a));
  if (a.batch_positions != nullptr && (a.device_position != nullptr || a.kv_begin != 0)) {
    return absl::InvalidArgumentError(
        "Attention: batch_positions covers keys from 0 and excludes device_position (kv_begin must be 0)");
  }
  if (a.rows * a.num_heads > std::numeric_limits<int>::max() || a.batch > 65535) {
    return absl::InvalidArgumentError(StrCat("Attention: ", a.rows, " rows x ", a.num_heads, " heads is too large"));
  }
  if (a.dtype != DType::kF32 && a.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(StrCat("Attention: F32 or BF16 only, got ", DTypeName(a.dtype)));
  }
  return absl::OkStatus();
}

size_t SplitKvWorkspaceBytes(const AttentionArgs& a, int splits) {
  if (splits <= 1) return 0;
  const size_t slots = static_cast<size_t>(a.batch) * splits * a.rows * a.num_heads;
  return slots * (a.head_dim + 1) * sizeof(float);
}

absl::Status SplitKvAttention(const AttentionArgs& a, int splits, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
  STRATA_RETURN_IF_ERROR(ValidateAttention(a));
  if (splits < 1 || splits > 65535) return absl::InvalidArgumentError(StrCat("Attention: ", splits, " splits"));
  if (splits > 1 && (workspace == nullptr || workspace_bytes < SplitKvWorkspaceBytes(a, splits))) {
    return absl::InvalidArgumentError(StrCat("Attention: ", splits, " splits need ", SplitKvWorkspaceBytes(a, splits),
                                             " bytes of workspace, got ", workspace_bytes));
  }
  if (a.rows == 0) return absl::OkStatus();
  float* partial_out = nullptr;
  float* partial_lse = nullptr;
  if (splits > 1) {
    const size_t slots = static_cast<size_t>(a.batch) * splits * a.rows * a.num_heads;
    partial_out = static_cast<float*>(workspace);
    partial_lse = partial_out + slots * a.head_dim;
  }
  const int per_lane = static_cast<int>((a.head_dim + kWarpSize - 1) / kWarpSize);
  return DispatchActivation(a.dtype, "Attention", [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    const dim3 grid(static_cast<unsigned>(a.rows * a.num_heads), static_cast<unsigned>(splits),
                    static_cast<unsigned>(a.batch));
    // One dispatch point from head_dim to the per-lane width (elements of head_dim each lane holds) and
    // from the KV layout to the kernels' instantiation (each layout's key loop compiled on its own).
    const bool grouped = UsesGroupedDecode(a);
    auto launch_layout = [&](auto per_lane_tag, auto layout_tag) -> absl::Status {
      constexpr int kPerLane = decltype(per_lane_tag)::value;
      constexpr KvLayout kLayout = decltype(layout_tag)::value;
      if (a.head_dim % kPerLane != 0) {
        return absl::InvalidArgumentError(
            StrCat("Attention: head_dim ", a.head_dim, " is not a multiple of ", kPerLane));
      }
      if (grouped) {
        const int64_t group = a.num_heads / a.num_kv_heads;
        const size_t shared_bytes = (1 + kSplitWarps) * group * a.head_dim * sizeof(float);
        const dim3 grouped_grid(static_cast<unsigned>(a.rows * a.num_kv_heads), static_cast<unsigned>(splits),
                                static_cast<unsigned>(a.batch));
        // One dispatch point from the GQA ratio to the kernel's per-thread capacity.
        auto* kernel = group <= 1   ? GroupedDecodeKernel<T, kPerLane, 1, kLayout>
                       : group <= 2 ? GroupedDecodeKernel<T, kPerLane, 2, kLayout>
                       : group <= 4 ? GroupedDecodeKernel<T, kPerLane, 4, kLayout>
                                    : GroupedDecodeKernel<T, kPerLane, 8, kLayout>;
        kernel<<<grouped_grid, kSplitThreads, shared_bytes, stream>>>(a, partial_out, partial_lse);
      } else {
        SplitKvKernel<T, kPerLane, kLayout><<<grid, kSplitThreads, 0, stream>>>(a, partial_out, partial_lse);
      }
      return absl::OkStatus();
    };
    auto launch = [&](auto per_lane_tag) -> absl::Status {
      if (a.block_table != nullptr) {
        return launch_layout(per_lane_tag, std::integral_constant<KvLayout, KvLayout::kPaged>{});
      }
      return launch_layout(per_lane_tag, std::integral_constant<KvLayout, KvLayout::kContiguous>{});
    };
    const absl::Status status = per_lane <= 1   ? launch(std::integral_constant<int, 1>{})
                                : per_lane <= 2 ? launch(std::integral_constant<int, 2>{})
                                : per_lane <= 4 ? launch(std::integral_constant<int, 4>{})
                                                : launch(std::integral_constant<int, 8>{});
    STRATA_RETURN_IF_ERROR(status);
    STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("SplitKvKernel");
    if (splits > 1) {
      MergeSplitsKernel<T><<<dim3(static_cast<unsigned>(a.rows * a.num_heads), static_cast<unsigned>(a.batch)),
                             RoundUpToWarp(a.head_dim), 0, stream>>>(a, splits, partial_out, partial_lse);
      STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("MergeSplitsKernel");
    }
    return absl::OkStatus();
  });
}

static bool UsesFlash(const AttentionArgs& a) {
  return a.dtype == DType::kBF16 && (a.head_dim == 64 || a.head_dim == 128) && a.rows >= kFlashMinRows &&
         a.q_row_stride % 8 == 0 && a.out_row_stride % 8 == 0 && a.q_batch_stride % 8 == 0 &&
         a.out_batch_stride % 8 == 0 && Aligned16(a.q) && KvRowsAligned16(a);
}

int AttentionSplits(const AttentionArgs& a, size_t workspace_bytes) {
  if (UsesFlash(a) || a.rows <= 0) return 1;
  // Enough blocks to keep every SM streaming, each split at least kMinKeysPerSplit keys long.
  constexpr int64_t kTargetBlocks = 8 * 132;  // 8 blocks of 4 warps per SM: enough loads in flight
  const int64_t pairs = a.rows * (UsesGroupedDecode(a) ? a.num_kv_heads : a.num_heads) * a.batch;  // blocks per split
  const int64_t longest = VisibleKeys(a, a.rows - 1).end - a.kv_begin;
  int64_t splits = (kTargetBlocks + pairs - 1) / pairs;
  const int64_t by_length = longest / kMinKeysPerSplit;
  if (splits > by_length) splits = by_length;
  if (splits > kMaxSplits) splits = kMaxSplits;
  if (splits < 1) splits = 1;
  while (splits > 1 && SplitKvWorkspaceBytes(a, static_cast<int>(splits)) > workspace_bytes) splits /= 2;
  return static_cast<int>(splits);
}

// Prefill on cuDNN's fused attention where it loaded and serves the shape (not inside a CUDA graph being
// recorded: its scalars go by value) and a plan for the shape is worth building, else on the own tensor-core
// kernel; says once which it uses.
static absl::Status Prefill(const AttentionArgs& a, cudaStream_t stream) {
  const PrefillKernel kernel = GetPrefillKernel();
  static std::once_flag logged;
  std::call_once(logged, [&] {
    LogInfo(kernel == PrefillKernel::kOwn ? std::string("event=prefill_attention kernel=own reason=requested")
                                          : StrCat("event=prefill_attention kernel=", CudnnAttentionLoaded() ? "cudnn" : "own",
                                                   " detail=\"", CudnnDescription(), "\""));
  });
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (kernel != PrefillKernel::kOwn && CudnnServes(a) && cudaStreamIsCapturing(stream, &capture) == cudaSuccess &&
      capture == cudaStreamCaptureStatusNone) {
    const absl::Status status =
        CudnnAttention(a, stream, kernel == PrefillKernel::kCudnn ? CudnnPlanBuild::kAlways : CudnnPlanBuild::kWhenAmortized);
    if (status.ok() || kernel == PrefillKernel::kCudnn) return status;
    static LogThrottle throttle;
    if (uint64_t held_back; !absl::IsUnavailable(status) && !absl::IsFailedPrecondition(status) &&
                            throttle.Allow(&held_back)) {
      LogWarning(StrCat("event=cudnn_attention_fallback rows=", a.rows, " keys=", a.kv_end - a.kv_begin,
                        " heads=", a.num_heads, "x", a.num_kv_heads, " head_dim=", a.head_dim, " held_back=", held_back,
                        " error=\"", status.message(), "\""));
    }
  }
  return FlashAttentionPrefill(a, stream);
}

absl::Status Attention(const AttentionArgs& a, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  STRATA_RETURN_IF_ERROR(ValidateAttention(a));
  if (a.rows == 0) return absl::OkStatus();
  if (UsesFlash(a)) return Prefill(a, stream);
  return SplitKvAttention(a, AttentionSplits(a, workspace_bytes), workspace, workspace_bytes, stream);
}

absl::Status MergeAttention(DType dtype, void* acc_out, float* acc_lse, const void* part_out, const float* part_lse,
                            int64_t rows, int64_t num_heads, int64_t head_dim, int64_t row_stride,
                            cudaStream_t stream) {
  if (rows < 0 || num_heads <= 0 || head_dim <= 0 || head_dim > kMaxHeadDim || row_stride < num_heads * head_dim) {
    return absl::InvalidArgumentError(StrCat("MergeAttention: ", rows, " rows of ", num_heads, " heads of ", head_dim,
                                             " with row stride ", row_stride));
  }
  if (rows == 0) return absl::OkStatus();
  return DispatchActivation(dtype, "MergeAttention", [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    MergeChunkKernel<T><<<static_cast<unsigned>(rows * num_heads), RoundUpToWarp(head_dim), 0, stream>>>(
        static_cast<T*>(acc_out), acc_lse, static_cast<const T*>(part_out), part_lse, rows, num_heads, head_dim,
        row_stride);
    STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("MergeChunkKernel");
    return absl::OkStatus();
  });
}

}  // namespace strata::kernels
