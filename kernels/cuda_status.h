// One way to check CUDA runtime and cuBLAS calls: STRATA_CUDA_RETURN_IF_ERROR turns a failed call into an
// absl::Status that names the call, the error and the source line, and returns it.
#ifndef STRATA_KERNELS_CUDA_STATUS_H_
#define STRATA_KERNELS_CUDA_STATUS_H_

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "common/status.h"

namespace strata::kernels {

// OK for cudaSuccess / CUBLAS_STATUS_SUCCESS; otherwise an error naming `call` and the code.
// cudaErrorMemoryAllocation and CUBLAS_STATUS_ALLOC_FAILED map to kResourceExhausted, bad arguments to
// kInvalidArgument, everything else to kInternal.
absl::Status CudaCallStatus(cudaError_t code, const char* call, const char* file, int line);
absl::Status CudaCallStatus(cublasStatus_t code, const char* call, const char* file, int line);

// The last error of a kernel launch (cudaGetLastError), as a Status naming the kernel.
absl::Status LaunchStatus(const char* kernel, const char* file, int line);

}  // namespace strata::kernels

// Returns from the enclosing function with a Status when `call` (a cudaError_t or cublasStatus_t
// expression) fails.
#define STRATA_CUDA_RETURN_IF_ERROR(call)                                                              \
  do {                                                                                                 \
    ::absl::Status strata_cuda_status_ = ::strata::kernels::CudaCallStatus((call), #call, __FILE__, __LINE__); \
    if (!strata_cuda_status_.ok()) return strata_cuda_status_;                                         \
  } while (false)

// After a <<<>>> launch: returns the launch error, if any, naming `kernel`.
#define STRATA_CUDA_RETURN_IF_LAUNCH_FAILED(kernel)                                                  \
  do {                                                                                               \
    ::absl::Status strata_cuda_status_ = ::strata::kernels::LaunchStatus(kernel, __FILE__, __LINE__); \
    if (!strata_cuda_status_.ok()) return strata_cuda_status_;                                       \
  } while (false)

#endif  // STRATA_KERNELS_CUDA_STATUS_H_
