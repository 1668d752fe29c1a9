// RAII owners of CUDA resources: device and pinned host memory, streams, events, cuBLAS(Lt) handles and
// executable graphs. Each is move-only, created through a factory that returns StatusOr, and releases
// its resource in the destructor (errors there are ignored: nothing can act on them).
// Thread safety: none of these is safe for concurrent mutation; distinct objects are independent.
#ifndef STRATA_KERNELS_CUDA_OWNERS_H_
#define STRATA_KERNELS_CUDA_OWNERS_H_

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "absl/status/statusor.h"

namespace strata::kernels {

// A move-only owner of one handle, released by `Release` (a stateless functor) when not null.
template <typename Handle, typename Release>
class UniqueCudaHandle {
 public:
  UniqueCudaHandle() = default;
  explicit UniqueCudaHandle(Handle handle) : handle_(handle) {}
  UniqueCudaHandle(UniqueCudaHandle&& other) noexcept : handle_(std::exchange(other.handle_, Handle{})) {}
  UniqueCudaHandle& operator=(UniqueCudaHandle&& other) noexcept {
    if (this != &other) {
      Reset();
      handle_ = std::exchange(other.handle_, Handle{});
    }
    return *this;
  }
  UniqueCudaHandle(const UniqueCudaHandle&) = delete;
  UniqueCudaHandle& operator=(const UniqueCudaHandle&) = delete;
  ~UniqueCudaHandle() { Reset(); }

  Handle get() const { return handle_; }
  explicit operator bool() const { return handle_ != Handle{}; }
  void Reset() {
    if (handle_ != Handle{}) Release()(handle_);
    handle_ = Handle{};
  }

 private:
  Handle handle_{};
};

struct StreamRelease {
  void operator()(cudaStream_t s) const { cudaStreamDestroy(s); }
};
struct EventRelease {
  void operator()(cudaEvent_t e) const { cudaEventDestroy(e); }
};
struct CublasRelease {
  void operator()(cublasHandle_t h) const { cublasDestroy(h); }
};
struct CublasLtRelease {
  void operator()(cublasLtHandle_t h) const { cublasLtDestroy(h); }
};
struct GraphExecRelease {
  void operator()(cudaGraphExec_t g) const { cudaGraphExecDestroy(g); }
};
struct GraphRelease {
  void operator()(cudaGraph_t g) const { cudaGraphDestroy(g); }
};

using Stream = UniqueCudaHandle<cudaStream_t, StreamRelease>;
using Event = UniqueCudaHandle<cudaEvent_t, EventRelease>;
using CublasHandle = UniqueCudaHandle<cublasHandle_t, CublasRelease>;
using CublasLtHandle = UniqueCudaHandle<cublasLtHandle_t, CublasLtRelease>;
using Graph = UniqueCudaHandle<cudaGraph_t, GraphRelease>;
using GraphExec = UniqueCudaHandle<cudaGraphExec_t, GraphExecRelease>;

// A non-blocking stream: never synchronizes with the legacy default stream.
absl::StatusOr<Stream> CreateStream();
// An event; `timing` false makes it cheaper for pure ordering.
absl::StatusOr<Event> CreateEvent(bool timing = false);
absl::StatusOr<CublasHandle> CreateCublas();
absl::StatusOr<CublasLtHandle> CreateCublasLt();

struct DeviceMemory {  // cudaMalloc
  static void Free(void* p) { cudaFree(p); }
};
struct PinnedMemory {  // cudaMallocHost: page-locked, the source or target of asynchronous copies
  static void Free(void* p) { cudaFreeHost(p); }
};

// `bytes` of `Memory`; empty (data() == nullptr) for 0 bytes.
template <typename Memory>
class CudaBuffer {
 public:
  static absl::StatusOr<CudaBuffer> Allocate(size_t bytes);  // defined for each Memory in the .cc
  CudaBuffer() = default;
  CudaBuffer(CudaBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  CudaBuffer& operator=(CudaBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;
  ~CudaBuffer() { Reset(); }

  void* data() const { return data_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }

 private:
  CudaBuffer(void* data, size_t bytes) : data_(data), bytes_(bytes) {}
  void Reset() {
    if (data_ != nullptr) Memory::Free(data_);
    data_ = nullptr;
    bytes_ = 0;
  }

  void* data_ = nullptr;
  size_t bytes_ = 0;
};

using DeviceBuffer = CudaBuffer<DeviceMemory>;
using PinnedBuffer = CudaBuffer<PinnedMemory>;
template <>
absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes);
template <>
absl::StatusOr<PinnedBuffer> PinnedBuffer::Allocate(size_t bytes);

// Number of CUDA devices visible, or an error saying why there are none usable (no driver, no device).
absl::StatusOr<int> VisibleDeviceCount();

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_CUDA_OWNERS_H_
