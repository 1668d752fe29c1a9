#include "kernels/cuda_status.h"

#include "common/strings.h"

namespace strata::kernels {
namespace {

std::string_view Basename(const char* file) {
  std::string_view path(file);
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

}  // namespace

absl::Status CudaCallStatus(cudaError_t code, const char* call, const char* file, int line) {
  if (code == cudaSuccess) return absl::OkStatus();
  // Clear a sticky launch error so it is reported once, by the call that saw it.
  (void)cudaGetLastError();
  std::string message = StrCat(call, " failed: ", cudaGetErrorName(code), " (", cudaGetErrorString(code), ") at ",
                               Basename(file), ":", line);
  switch (code) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    case cudaErrorInvalidValue:
    case cudaErrorInvalidConfiguration:
      return absl::InvalidArgumentError(message);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status CudaCallStatus(cublasStatus_t code, const char* call, const char* file, int line) {
  if (code == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  std::string message = StrCat(call, " failed: ", cublasGetStatusName(code), " (", cublasGetStatusString(code),
                               ") at ", Basename(file), ":", line);
  switch (code) {
    case CUBLAS_STATUS_ALLOC_FAILED:
      return absl::ResourceExhaustedError(message);
    case CUBLAS_STATUS_INVALID_VALUE:
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status LaunchStatus(const char* kernel, const char* file, int line) {
  const cudaError_t code = cudaGetLastError();
  if (code == cudaSuccess) return absl::OkStatus();
  return CudaCallStatus(code, StrCat("launch of ", kernel).c_str(), file, line);
}

}  // namespace strata::kernels
