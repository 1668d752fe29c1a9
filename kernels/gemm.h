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

// A cuBLAS handle bound to one stream, with its own workspace (so captured graphs reuse fixed memory).
// Not thread-safe.
class Gemm {
 public:
  static absl::StatusOr<Gemm> Create(cudaStream_t stream);
  Gemm() = default;  // empty: only Create makes a usable one

  // out [rows, out_features] = x [rows, in_features] · weight [out_features, in_features]ᵀ, all row-major
  // device arrays of `dtype` (F32 or BF16). Enqueued on the stream given at Create.
  absl::Status Linear(DType dtype, const void* x, int64_t rows, int64_t in_features, const void* weight,
                      int64_t out_features, void* out);

  // C [m, n] = A [m, k] · B [n, k]ᵀ in BF16 with float32 accumulation: the raw operation behind Linear,
  // for benchmarks that measure the GEMM rate.
  absl::Status MatmulBf16(const void* a, const void* b, int64_t m, int64_t n, int64_t k, void* c) {
    return Linear(DType::kBF16, a, m, k, b, n, c);
  }

 private:
  CublasHandle handle_;
  DeviceBuffer workspace_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_GEMM_H_
