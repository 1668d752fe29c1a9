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

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes) {
  DeviceBuffer buffer;
  if (bytes == 0) return buffer;
  STRATA_CUDA_RETURN_IF_ERROR(cudaMalloc(&buffer.data_, bytes));
  buffer.bytes_ = bytes;
  return buffer;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);
}

absl::StatusOr<PinnedBuffer> PinnedBuffer::Allocate(size_t bytes) {
  PinnedBuffer buffer;
  if (bytes == 0) return buffer;
  STRATA_CUDA_RETURN_IF_ERROR(cudaMallocHost(&buffer.data_, bytes));
  buffer.bytes_ = bytes;
  return buffer;
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFreeHost(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

PinnedBuffer::~PinnedBuffer() {
  if (data_ != nullptr) cudaFreeHost(data_);
}

absl::StatusOr<int> VisibleDeviceCount() {
  int count = 0;
  STRATA_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&count));
  if (count == 0) return absl::FailedPreconditionError("no CUDA device is visible");
  return count;
}

}  // namespace strata::kernels
