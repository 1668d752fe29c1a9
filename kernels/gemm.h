// GEMMs through cuBLAS: the projections of a transformer layer, out = x · weightᵀ, with weight in the
// Hugging Face [out_features, in_features] layout. BF16 inputs accumulate in float32 (tensor cores);
// F32 inputs use cuBLAS's pedantic float32 path (no TF32), for exact comparisons against references.
#ifndef STRATA_KERNELS_GEMM_H_
#define STRATA_KERNELS_GEMM_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "kernels/cuda_owners.h"

namespace strata::kernels {

// Batch-1 BF16 projections run on a weight-streaming GEMV kernel (gemv.cu) instead of cuBLAS. Measured
// on the H100 (Llama-3-8B decode step, 4k context): 8.80 ms against cuBLAS's 8.98 ms at one row, but
// slower from two rows on (10.4 vs 9.2 ms at 2, 25.2 vs 14.8 ms at 8: every row re-reads x per weight
// vector), so it serves one row only.
inline constexpr int64_t kSmallBatchRows = 1;
bool SmallBatchLinearApplies(DType dtype, int64_t rows, int64_t in_features, const void* x, const void* weight);
// out [rows, out_features] = x [rows, in_features] · weightᵀ, BF16, float32 accumulation.
absl::Status SmallBatchLinear(const void* x, int64_t rows, int64_t in_features, const void* weight,
                              int64_t out_features, void* out, cudaStream_t stream);

// A cuBLAS handle bound to one stream, with its own workspace (so captured graphs reuse fixed memory).
// Not thread-safe.
class Gemm {
 public:
  static absl::StatusOr<Gemm> Create(cudaStream_t stream);
  Gemm() = default;  // empty: only Create makes a usable one

  // out [rows, out_features] = x [rows, in_features] · weight [out_features, in_features]ᵀ, all row-major
  // device arrays of `dtype` (F32 or BF16). Enqueued on the stream given at Create. Decode-sized BF16
  // calls take SmallBatchLinear.
  absl::Status Linear(DType dtype, const void* x, int64_t rows, int64_t in_features, const void* weight,
                      int64_t out_features, void* out);

  // C [m, n] = A [m, k] · B [n, k]ᵀ in BF16 with float32 accumulation: the raw operation behind Linear,
  // for benchmarks that measure the GEMM rate.
  absl::Status MatmulBf16(const void* a, const void* b, int64_t m, int64_t n, int64_t k, void* c) {
    return Linear(DType::kBF16, a, m, k, b, n, c);
  }


 private:
  absl::Status CublasLinear(DType dtype, const void* x, int64_t rows, int64_t in_features, const void* weight,
                            int64_t out_features, void* out);

  CublasHandle handle_;
  DeviceBuffer workspace_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_GEMM_H_
