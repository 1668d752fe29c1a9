// Row-wise and elementwise kernels of a Llama-family layer: embedding gather, residual add fused with
// RMSNorm, RoPE, SwiGLU, bias, KV-cache writes, dtype conversion and random fill. Every launcher checks
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

// dst[i] = src[i] converted between F32 and BF16 (round to nearest even), or copied when the types match.
absl::Status Convert(DType src_dtype, const void* src, DType dst_dtype, void* dst, int64_t count, cudaStream_t stream);

// Fills `count` elements with normal(0, stddev) numbers from a counter-based generator keyed by `seed`
// (the same seed gives the same values). For benchmarks and tests.
absl::Status FillNormal(DType dtype, void* data, int64_t count, float stddev, uint64_t seed, cudaStream_t stream);

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_ELEMENTWISE_H_
