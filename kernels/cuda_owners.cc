#include "kernels/cuda_owners.h"

#include "common/strings.h"
#include "kernels/cuda_status.h"

namespace strata::kernels {

absl::StatusOr<Stream> CreateStream() {
  cudaStream_t stream = nullptr;
  STRATA_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return Stream(stream);
}

absl::StatusOr<Event> CreateEvent(bool timing) {
  cudaEvent_t event = nullptr;
  STRATA_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&event, timing ? cudaEventDefault : cudaEventDisableTiming));
  return Event(event);
}

absl::StatusOr<CublasHandle> CreateCublas() {
  cublasHandle_t handle = nullptr;
  STRATA_CUDA_RETURN_IF_ERROR(cublasCreate(&handle));
  return CublasHandle(handle);
}

absl::StatusOr<CublasLtHandle> CreateCublasLt() {
  cublasLtHandle_t handle = nullptr;
  STRATA_CUDA_RETURN_IF_ERROR(cublasLtCreate(&handle));
  return CublasLtHandle(handle);
}

template <>
absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes) {
  void* data = nullptr;
  if (bytes > 0) STRATA_CUDA_RETURN_IF_ERROR(cudaMalloc(&data, bytes));
  return DeviceBuffer(data, data == nullptr ? 0 : bytes);
}

template <>
absl::StatusOr<PinnedBuffer> PinnedBuffer::Allocate(size_t bytes) {
  void* data = nullptr;
  if (bytes > 0) STRATA_CUDA_RETURN_IF_ERROR(cudaMallocHost(&data, bytes));
  return PinnedBuffer(data, data == nullptr ? 0 : bytes);
}

absl::StatusOr<int> VisibleDeviceCount() {
  int count = 0;
  STRATA_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&count));
  if (count == 0) return absl::FailedPreconditionError("no CUDA device is visible");
  return count;
}

}  // namespace strata::kernels
