// Where the attention kernels find a key: the one address rule for a contiguous (head-major) and a paged
// (block table) KV cache, and the per-batch-item query positions. Private to kernels/.
#ifndef STRATA_KERNELS_KV_ROWS_CUH_
#define STRATA_KERNELS_KV_ROWS_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#include "common/dtype.h"
#include "kernels/attention.h"
#include "kernels/dispatch.h"

namespace strata::kernels {

// Resolves the device-side positions of batch item `batch` into a.first_position and a.kv_end: from
// device_position (a replayed decode step) or batch_positions (batched decode over sequences of different
// lengths); otherwise the host values stand. ValidateAttention refuses both set at once.
__device__ __forceinline__ void ApplyPositions(AttentionArgs& a, int64_t batch) {
  if (a.device_position != nullptr) {
    a.first_position = *a.device_position;
    a.kv_end = a.first_position + a.rows;
  } else if (a.batch_positions != nullptr) {
    a.first_position = a.batch_positions[batch];
    a.kv_end = a.first_position + a.rows;
  }
}

enum class KvLayout { kContiguous, kPaged, kEither };

// The key rows of one (batch item, KV head). K and V share the layout, so one offset addresses a key's row
// in both. kLayout fixes the layout at compile time (the decode kernels are instantiated per layout, so their
// key loops carry no layout branch) or leaves it to a branch per call, uniform over the launch (kEither: the
// tensor-core kernel, whose few row lookups per tile are not its hot loop). Strides and sizes are read from
// the kernel's AttentionArgs (parameter space) at each use rather than held in registers.
template <typename T, KvLayout kLayout = KvLayout::kEither>
struct KeyRows {
  static constexpr bool kPaged = kLayout == KvLayout::kPaged;
  const T* k;  // contiguous: key kv_begin's row; paged: the KV head's first row in pool block 0
  const T* v;
  const int32_t* table;  // paged: the batch item's block-table row; null: contiguous

  // Element offset from k and v of the head_dim-wide row of key j (absolute position). Paged positions and
  // block sizes fit 32 bits (ValidateAttention), so the block split is a 32-bit divide.
  // REQUIRES: kv_begin <= j < kv_end (a block table has entries only for the keys it covers).
  __device__ __forceinline__ int64_t Offset(const AttentionArgs& a, int64_t j, int head_dim) const {
    if constexpr (kLayout == KvLayout::kContiguous) {
      return (j - a.kv_begin) * head_dim;
    } else if constexpr (kLayout == KvLayout::kPaged) {
      const uint32_t key = static_cast<uint32_t>(j), block_tokens = static_cast<uint32_t>(a.block_tokens);
      return (static_cast<int64_t>(table[key / block_tokens]) * a.block_stride + key % block_tokens) * head_dim;
    } else {
      return table == nullptr ? KeyRows<T, KvLayout::kContiguous>{k, v, table}.Offset(a, j, head_dim)
                              : KeyRows<T, KvLayout::kPaged>{k, v, table}.Offset(a, j, head_dim);
    }
  }
};

// The key rows of (batch, kv_head) in a launch whose layout is kLayout (kEither: as a.block_table says).
template <typename T, KvLayout kLayout = KvLayout::kEither>
__device__ __forceinline__ KeyRows<T, kLayout> KeyRowsOf(const AttentionArgs& a, int64_t batch, int64_t kv_head,
                                                         int head_dim) {
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  const bool paged = kLayout == KvLayout::kPaged || (kLayout == KvLayout::kEither && a.block_table != nullptr);
  if (!paged) {
    const int64_t offset = batch * a.kv_batch_stride + kv_head * a.kv_head_stride * head_dim;
    return {k + offset, v + offset, nullptr};
  }
  const int64_t offset = kv_head * a.block_tokens * head_dim;
  return {k + offset, v + offset, a.block_table + batch * a.block_table_stride};
}

// Whether every K/V row starts 16 bytes aligned (the vectorized and cp.async paths): k and v aligned, and
// head_dim plus the contiguous batch stride or the paged block stride in whole 16-byte vectors.
inline bool KvRowsAligned16(const AttentionArgs& a) {
  const int64_t vec = 16 / static_cast<int64_t>(DTypeSize(a.dtype));
  const int64_t stride = a.block_table != nullptr ? a.block_stride * a.head_dim : a.kv_batch_stride;
  return a.head_dim % vec == 0 && stride % vec == 0 && Aligned16(a.k) && Aligned16(a.v);
}

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_KV_ROWS_CUH_
