#include "kernels/gemm.h"

#include <limits>

#include "common/strings.h"
#include "kernels/cuda_status.h"

namespace strata::kernels {
namespace {

// cuBLAS's recommended workspace on Hopper (32 MiB): large enough for its split-K kernels.
constexpr size_t kWorkspaceBytes = size_t{32} << 20;

}  // namespace

absl::StatusOr<Gemm> Gemm::Create(cudaStream_t stream) {
  Gemm gemm;
  STRATA_ASSIGN_OR_RETURN(gemm.handle_, CreateCublas());
  STRATA_ASSIGN_OR_RETURN(gemm.workspace_, DeviceBuffer::Allocate(kWorkspaceBytes));
  STRATA_CUDA_RETURN_IF_ERROR(cublasSetStream(gemm.handle_.get(), stream));
  STRATA_CUDA_RETURN_IF_ERROR(cublasSetWorkspace(gemm.handle_.get(), gemm.workspace_.data(), kWorkspaceBytes));
  STRATA_CUDA_RETURN_IF_ERROR(cublasSetMathMode(gemm.handle_.get(), CUBLAS_DEFAULT_MATH));
  gemm.stream_ = stream;
  return gemm;
}

absl::Status Gemm::Linear(DType dtype, const void* x, int64_t rows, int64_t in_features, const void* weight,
                          int64_t out_features, void* out) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  if (rows < 0 || in_features <= 0 || out_features <= 0 || rows > kMax || in_features > kMax ||
      out_features > kMax) {
    return absl::InvalidArgumentError(StrCat("Linear: no GEMM of [", rows, ", ", in_features, "] by [", out_features,
                                             ", ", in_features, "]ᵀ"));
  }
  if (rows == 0) return absl::OkStatus();
  if (SmallBatchLinearApplies(dtype, rows, in_features, x, weight)) {
    return SmallBatchLinear(x, rows, in_features, weight, out_features, out, stream_);
  }
  return CublasLinear(dtype, x, rows, in_features, weight, out_features, out);
}

absl::Status Gemm::CublasLinear(DType dtype, const void* x, int64_t rows, int64_t in_features, const void* weight,
                                int64_t out_features, void* out) {
  cudaDataType_t type;
  cublasComputeType_t compute;
  switch (dtype) {
    case DType::kBF16:
      type = CUDA_R_16BF;
      compute = CUBLAS_COMPUTE_32F;
      break;
    case DType::kF32:
      type = CUDA_R_32F;
      compute = CUBLAS_COMPUTE_32F_PEDANTIC;
      break;
    default:
      return absl::InvalidArgumentError(StrCat("Linear: no GEMM for ", DTypeName(dtype)));
  }
  const float alpha = 1.0f, beta = 0.0f;
  // Row-major out [rows, out_features] is column-major outᵀ = W · xᵀ: W (row-major [out, in]) read as
  // column-major [in, out] and transposed; x read as column-major [in, rows].
  STRATA_CUDA_RETURN_IF_ERROR(cublasGemmEx(handle_.get(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out_features),
                                           static_cast<int>(rows), static_cast<int>(in_features), &alpha, weight,
                                           type, static_cast<int>(in_features), x, type,
                                           static_cast<int>(in_features), &beta, out, type,
                                           static_cast<int>(out_features), compute, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

}  // namespace strata::kernels
