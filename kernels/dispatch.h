// Host-side dispatch from a runtime DType to the storage type a kernel template is instantiated for.
// Private to kernels/.
#ifndef STRATA_KERNELS_DISPATCH_H_
#define STRATA_KERNELS_DISPATCH_H_

#include <cuda_bf16.h>

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "common/dtype.h"
#include "common/strings.h"

namespace strata::kernels {

// Calls f(T{}) with T = float for F32 and __nv_bfloat16 for BF16; InvalidArgument for any other dtype.
template <typename F>
absl::Status DispatchActivation(DType dtype, std::string_view what, F&& f) {
  switch (dtype) {
    case DType::kF32:
      return f(float{});
    case DType::kBF16:
      return f(__nv_bfloat16{});
    default:
      return absl::InvalidArgumentError(
          StrCat(what, ": activations must be F32 or BF16, got ", DTypeName(dtype)));
  }
}

inline bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Blocks for a grid-stride loop over `work` items with `threads` per block: enough to fill the GPU a
// few times over, never more than the work needs.
inline unsigned GridFor(int64_t work, int threads) {
  constexpr int64_t kMaxBlocks = 132 * 16;  // H100 SXM: 132 SMs, 16 resident blocks of 128 threads each
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_DISPATCH_H_
