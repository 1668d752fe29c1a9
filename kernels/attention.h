// Causal grouped-query attention over a head-major KV cache, with per-row log-sum-exp so that results
// over separate key ranges (chunks: GPU-resident, streamed from host, read from SSD) merge exactly.
//
// Layouts (row-major, element strides):
//   q   [batch][rows][q_row_stride]: query row i, head h at q + i * q_row_stride + h * head_dim
//   k,v [batch][num_kv_heads][kv_head_stride][head_dim]: key index 0 is the key at absolute position
//       kv_begin (so a chunk buffer holding only keys [kv_begin, kv_end) works as well as a whole cache);
//       or paged: rows of fixed-size pool blocks found through a block table (AttentionArgs::block_table)
//   out like q, with out_row_stride
//   lse [batch][num_heads][rows], float32, natural log of Σ exp(scale · q·k) over the visible keys;
//       -inf where a row sees no key in [kv_begin, kv_end) (its output row is then 0)
// Query row i sits at absolute position first_position + i and sees key j when
// kv_begin <= j < kv_end, j <= position and (window == 0 or j > position - window).
// Query head h reads KV head h / (num_heads / num_kv_heads): K/V are never expanded.
#ifndef STRATA_KERNELS_ATTENTION_H_
#define STRATA_KERNELS_ATTENTION_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "common/dtype.h"

namespace strata::kernels {

struct AttentionArgs {
  DType dtype = DType::kBF16;  // of q, k, v and out: F32 or BF16; accumulation is float32 in every path
  const void* q = nullptr;
  int64_t q_row_stride = 0;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t kv_head_stride = 0;  // tokens between consecutive KV heads (the cache capacity)
  int64_t kv_begin = 0;        // absolute positions of the keys this call covers: [kv_begin, kv_end)
  int64_t kv_end = 0;
  void* out = nullptr;
  int64_t out_row_stride = 0;
  float* lse = nullptr;  // optional
  int64_t rows = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t first_position = 0;
  int64_t window = 0;
  float scale = 1.0f;
  // When set, the kernels read first_position from this device int64 and take kv_end = that + rows: a
  // decode step replayed from a CUDA graph at a new position. The host fields still size the launch.
  const int64_t* device_position = nullptr;
  // Independent problems of the same shape (batched decode): element offsets between them.
  int64_t batch = 1;
  int64_t q_batch_stride = 0;
  int64_t kv_batch_stride = 0;
  int64_t out_batch_stride = 0;
  // Paged KV: with block_table set, key j (absolute position) of KV head h for batch item b is row
  //   block_table[b * block_table_stride + j / block_tokens] * block_stride + h * block_tokens + j % block_tokens
  // of k (and of v), each row head_dim elements. kv_begin must then be 0; kv_head_stride and kv_batch_stride
  // are unused. The table holds an entry for every block of keys [0, kv_end) (the device kv_end where
  // positions are read on the device); block ids, positions and block_tokens fit int32.
  const int32_t* block_table = nullptr;  // device int32 block ids
  int64_t block_table_stride = 0;        // entries between consecutive batch items' tables
  int64_t block_tokens = 0;
  int64_t block_stride = 0;              // rows (of head_dim elements) between consecutive pool blocks
  // Batched decode over sequences of different lengths: when set, batch item b's query row i is at position
  // batch_positions[b] + i (device int32) and sees keys [0, batch_positions[b] + rows) (causal/window rules as
  // usual). The host first_position / kv_end must then be upper bounds (they size the launch and the splits).
  // REQUIRES: kv_begin == 0; device_position unset.
  const int32_t* batch_positions = nullptr;
};

// Checks shapes, strides and pointers of `args` (InvalidArgument naming the problem). Paged args need
// block_tokens > 0, block_stride >= num_kv_heads * block_tokens, kv_begin == 0 and, when batch > 1,
// block_table_stride > 0; batch_positions excludes device_position.
absl::Status ValidateAttention(const AttentionArgs& args);

// Picks the kernel: FlashAttentionPrefill for BF16 with head_dim 64 or 128 and at least
// kFlashMinRows query rows, SplitKvAttention otherwise, with as many key splits as fill the GPU and fit
// `workspace` (float32, SplitKvWorkspaceBytes). workspace may be null (then no split).
absl::Status Attention(const AttentionArgs& args, void* workspace, size_t workspace_bytes, cudaStream_t stream);
inline constexpr int64_t kFlashMinRows = 16;

// The key splits Attention uses for `args` on the split-KV path (1 on the tensor-core path), from the
// host first_position / kv_end (upper bounds when positions are read on the device).
int AttentionSplits(const AttentionArgs& args, size_t workspace_bytes);

// Work split of the tensor-core kernel: 8 warps of 16 query rows each (128-row tiles, 64-key tiles, Q
// in registers), or 4 warps of 32 rows (128-row tiles, 32-key tiles; each K/V fragment serves two
// m-tiles, Q re-read from shared memory).
enum class FlashTiling { k8Warps16Rows, k4Warps32Rows };
inline constexpr FlashTiling kDefaultFlashTiling = FlashTiling::k8Warps16Rows;

// Tensor-core prefill attention (FlashAttention-2 style, mma.sync m16n8k16 bf16 with float32
// accumulation, online softmax). REQUIRES: BF16, head_dim 64 or 128, strides multiples of 8 elements,
// q, k, v 16-byte aligned (contiguous or paged KV).
absl::Status FlashAttentionPrefill(const AttentionArgs& args, cudaStream_t stream,
                                   FlashTiling tiling = kDefaultFlashTiling);

// Flash-decoding: the visible keys of every (row, head) are split into `splits` ranges processed by
// separate blocks, then merged. Any head_dim <= 256, F32 or BF16, contiguous or paged KV. splits > 1
// needs `workspace` of SplitKvWorkspaceBytes(args, splits) bytes. With positions read on the device
// (device_position, batch_positions) the splits divide each item's own key range.
absl::Status SplitKvAttention(const AttentionArgs& args, int splits, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream);
size_t SplitKvWorkspaceBytes(const AttentionArgs& args, int splits);

// Merges the attention of the same queries over a further key chunk into an accumulated result:
// (acc_out, acc_lse) <- merge((acc_out, acc_lse), (part_out, part_lse)), per (row, head):
// lse = log(e^a + e^b), out = e^(a-lse) acc + e^(b-lse) part. Rows where both are -inf stay 0 / -inf.
// out arrays are [rows][row_stride] with heads of head_dim; lse arrays [num_heads][rows].
absl::Status MergeAttention(DType dtype, void* acc_out, float* acc_lse, const void* part_out, const float* part_lse,
                            int64_t rows, int64_t num_heads, int64_t head_dim, int64_t row_stride,
                            cudaStream_t stream);

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_ATTENTION_H_
