// Row-wise and elementwise kernels of a Llama-family layer: embedding gather, residual add fused with
// RMSNorm, RoPE, SwiGLU, bias, KV-cache writes (contiguous and paged), block copies between a paged pool
// and a staging buffer, dtype conversion and random fill. Every launcher checks
// its arguments, enqueues on `stream` and returns a Status; none synchronizes. Activations are F32 or
// BF16 (the `dtype` argument); arithmetic is float32 in every case. Pointers are device pointers.
#ifndef STRATA_KERNELS_ELEMENTWISE_H_
#define STRATA_KERNELS_ELEMENTWISE_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "common/dtype.h"

namespace strata::kernels {

// out[i, :] = table[ids[i], :] for i < rows. ids are device int32 and must lie in [0, vocab) (checked by
// the caller on the host: a device-side check could only crash).
absl::Status EmbedRows(DType dtype, const void* table, int64_t vocab, int64_t width, const int32_t* ids, int64_t rows,
                       void* out, cudaStream_t stream);

// With `delta` non-null: x += delta first (x is updated in place). Then
// out = weight * (x / sqrt(mean(x^2) + eps)) per row of `width`. x, delta, weight, out share `dtype`.
absl::Status AddRmsNorm(DType dtype, void* x, const void* delta, const void* weight, float eps, int64_t rows,
                        int64_t width, void* out, cudaStream_t stream);

// Rotate-half RoPE in place on q [rows, q_cols] and k [rows, k_cols], both rows of head_dim-wide heads;
// row i is at position first_position + i and rotates pair (j, j + head_dim/2) by
// (first_position + i) * inv_freq[j] (float32 angle, cosine and sine in double rounded to float, as
// transformers computes them). inv_freq is float32 [head_dim / 2].
// With `device_position` set, the kernel reads the first position from that device int64 instead (a
// decode step replayed from a CUDA graph at a new position); first_position is then only checked.
absl::Status Rope(DType dtype, const float* inv_freq, int64_t head_dim, int64_t first_position, int64_t rows,
                  void* q, int64_t q_cols, void* k, int64_t k_cols, cudaStream_t stream,
                  const int64_t* device_position = nullptr);

// Rotate-half RoPE like Rope, but row i is at position positions[i] (device int32, one per row).
// Bit-identical to Rope for the same positions (the same kernel: same float32 angle and double sincos).
absl::Status RopeAt(DType dtype, const float* inv_freq, int64_t head_dim, const int32_t* positions, int64_t rows,
                    void* q, int64_t q_cols, void* k, int64_t k_cols, cudaStream_t stream);

// out = silu(gate) * up elementwise over `count` elements (out may alias gate or up).
absl::Status SwiGlu(DType dtype, const void* gate, const void* up, int64_t count, void* out, cudaStream_t stream);

// x += delta elementwise over `count` elements.
absl::Status Add(DType dtype, const void* delta, int64_t count, void* x, cudaStream_t stream);

// x[r, :] += bias[:] for every row of x [rows, cols].
absl::Status AddBias(DType dtype, const void* bias, int64_t rows, int64_t cols, void* x, cudaStream_t stream);

// Writes k and v [rows, num_kv_heads * head_dim] at positions first_position.. of a head-major cache
// [num_kv_heads][capacity_tokens][head_dim] (k_cache, v_cache). `device_position` as for Rope.
absl::Status WriteKvCache(DType dtype, const void* k, const void* v, int64_t rows, int64_t num_kv_heads,
                          int64_t head_dim, int64_t first_position, int64_t capacity_tokens, void* k_cache,
                          void* v_cache, cudaStream_t stream, const int64_t* device_position = nullptr);

// Writes row i of k and v ([rows, num_kv_heads * head_dim]) into a paged cache at token slot slots[i]
// (device int32: block * block_tokens + offset in the block): K of head h goes to row
//   (slots[i] / block_tokens) * block_stride + h * block_tokens + slots[i] % block_tokens of k_pool (V likewise).
// A negative slot skips the row. Rows are head_dim elements; block_stride counts rows between pool blocks
// (>= num_kv_heads * block_tokens). Slots must lie inside the pool (unchecked: they are device data).
absl::Status WriteKvPaged(DType dtype, const void* k, const void* v, int64_t rows, int64_t num_kv_heads,
                          int64_t head_dim, const int32_t* slots, int64_t block_tokens, int64_t block_stride,
                          void* k_pool, void* v_pool, cudaStream_t stream);

// The inverse for whole sequences: keys [0, tokens) of one layer's paged K and V, found through
// `block_table` (device int32, one entry per block_tokens keys), into contiguous head-major k_out / v_out
// [num_kv_heads][tokens][head_dim] (so that attention kernels for contiguous caches can read them).
absl::Status GatherKvPaged(DType dtype, const void* k_pool, const void* v_pool, const int32_t* block_table,
                           int64_t block_tokens, int64_t block_stride, int64_t num_kv_heads, int64_t head_dim,
                           int64_t tokens, void* k_out, void* v_out, cudaStream_t stream);

// Copies `count` blocks of block_bytes: block i of the source (src + src_blocks[i] * block_bytes, or
// src + i * block_bytes when src_blocks is null) to block i of the destination (likewise with dst_blocks).
// The gather/scatter between the pool and a contiguous staging buffer in the payload layout. Pointers are
// device (or mapped pinned) memory; block_bytes a multiple of 16 and pointers 16-byte aligned use 16-byte vector
// copies. Source and destination blocks must not overlap.
absl::Status CopyBlocks(const void* src, const int32_t* src_blocks, void* dst, const int32_t* dst_blocks,
                        int64_t count, int64_t block_bytes, cudaStream_t stream);

// dst[i] = src[i] converted between F32 and BF16 (round to nearest even), or copied when the types match.
absl::Status Convert(DType src_dtype, const void* src, DType dst_dtype, void* dst, int64_t count, cudaStream_t stream);

// Fills `count` elements with normal(0, stddev) numbers from a counter-based generator keyed by `seed`
// (the same seed gives the same values). For benchmarks and tests.
absl::Status FillNormal(DType dtype, void* data, int64_t count, float stddev, uint64_t seed, cudaStream_t stream);

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_ELEMENTWISE_H_
