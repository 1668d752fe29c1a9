// Tensor: a 2-D row-major array in a backend's memory, with shared ownership of that memory.
#ifndef STRATA_WORKER_ENGINE_TENSOR_H_
#define STRATA_WORKER_ENGINE_TENSOR_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "common/status.h"
#include "common/strings.h"

namespace strata::engine {

// A handle, cheap to copy: copies and row views share the memory and keep it alive. Rows are dense
// (row stride == cols). Where the memory lives (host, GPU) is the creating backend's business; only
// that backend dereferences it. A const Tensor& is an input, a Tensor& an output.
class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, int64_t rows, int64_t cols, void* data, std::shared_ptr<const void> owner)
      : dtype_(dtype), rows_(rows), cols_(cols), data_(data), owner_(std::move(owner)) {}

  DType dtype() const { return dtype_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t elements() const { return rows_ * cols_; }
  size_t bytes() const { return static_cast<size_t>(elements()) * DTypeSize(dtype_); }
  bool empty() const { return data_ == nullptr; }

  void* data() const { return data_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(data_);
  }

  // Rows [begin, begin + count) as a tensor sharing this one's memory.
  Tensor Rows(int64_t begin, int64_t count) const {
    STRATA_CHECK(begin >= 0 && count >= 0 && begin + count <= rows_);
    return Tensor(dtype_, count, cols_, static_cast<std::byte*>(data_) + begin * cols_ * DTypeSize(dtype_), owner_);
  }

 private:
  DType dtype_ = DType::kF32;
  int64_t rows_ = 0;
  int64_t cols_ = 0;
  void* data_ = nullptr;
  std::shared_ptr<const void> owner_;
};

// Bytes of a [rows, cols] tensor of `dtype` rounded up to a multiple of `granularity_bytes` (at least one
// granule, so even an empty tensor has an address of its own); InvalidArgument for a negative or
// overflowing shape. What every backend's Allocate asks for.
inline absl::StatusOr<size_t> AllocationBytes(DType dtype, int64_t rows, int64_t cols, size_t granularity_bytes) {
  int64_t elements = 0, bytes = 0;
  if (rows < 0 || cols < 0 || __builtin_mul_overflow(rows, cols, &elements) ||
      __builtin_mul_overflow(elements, static_cast<int64_t>(DTypeSize(dtype)), &bytes)) {
    return absl::InvalidArgumentError(StrCat("Allocate: no tensor has shape [", rows, ", ", cols, "]"));
  }
  const size_t granules = (std::max<size_t>(static_cast<size_t>(bytes), 1) + granularity_bytes - 1) / granularity_bytes;
  return granules * granularity_bytes;
}

// OK when `tensor` is [rows, cols] of `dtype`; otherwise InvalidArgument naming `what` and both shapes.
inline absl::Status ExpectShape(const Tensor& tensor, DType dtype, int64_t rows, int64_t cols, std::string_view what) {
  if (tensor.empty() || tensor.dtype() != dtype || tensor.rows() != rows || tensor.cols() != cols) {
    return absl::InvalidArgumentError(
        StrCat(what, ": expected ", DTypeName(dtype), "[", rows, ", ", cols, "], got ",
               tensor.empty() ? std::string("no tensor")
                              : StrCat(DTypeName(tensor.dtype()), "[", tensor.rows(), ", ", tensor.cols(), "]")));
  }
  return absl::OkStatus();
}

// OK when rows [src_row, src_row + rows) of `src` and [dst_row, dst_row + rows) of `dst` exist and the two
// tensors have the same dtype and width: what Backend::CopyRows checks.
inline absl::Status CheckCopyRows(const Tensor& src, int64_t src_row, const Tensor& dst, int64_t dst_row,
                                  int64_t rows) {
  if (src.empty() || dst.empty() || src.dtype() != dst.dtype() || src.cols() != dst.cols()) {
    return absl::InvalidArgumentError(StrCat("CopyRows: ", DTypeName(src.dtype()), "[", src.rows(), ", ", src.cols(),
                                             "] and ", DTypeName(dst.dtype()), "[", dst.rows(), ", ", dst.cols(),
                                             "] are not rows of one dtype and width"));
  }
  if (rows < 0 || src_row < 0 || dst_row < 0 || src_row + rows > src.rows() || dst_row + rows > dst.rows()) {
    return absl::OutOfRangeError(StrCat("CopyRows: rows [", src_row, ", ", src_row + rows, ") of ", src.rows(),
                                        " to rows [", dst_row, ", ", dst_row + rows, ") of ", dst.rows()));
  }
  return absl::OkStatus();
}

// OK when every id of `blocks` names a whole block of `block_bytes` inside `pool` and there is one host
// buffer per block: what Backend::CopyBlocksToHost and CopyBlocksFromHost check.
inline absl::Status CheckBlockCopy(const Tensor& pool, absl::Span<const int32_t> blocks, int64_t block_bytes,
                                   size_t host_buffers) {
  if (block_bytes <= 0 || pool.empty() || host_buffers != blocks.size()) {
    return absl::InvalidArgumentError(StrCat("CopyBlocks: ", blocks.size(), " blocks of ", block_bytes, " bytes and ",
                                             host_buffers, " host buffers"));
  }
  const int64_t pool_blocks = static_cast<int64_t>(pool.bytes()) / block_bytes;
  for (int32_t block : blocks) {
    if (block < 0 || block >= pool_blocks) {
      return absl::OutOfRangeError(StrCat("CopyBlocks: block ", block, " of a ", pool_blocks, "-block pool"));
    }
  }
  return absl::OkStatus();
}

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_TENSOR_H_
