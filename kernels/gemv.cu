// Small-batch BF16 projections (decode): out [rows, out_features] = x [rows, in] · Wᵀ for a few rows,
// where the work is streaming W once from memory and cuBLAS's GEMM tiles waste most of their width.
// The kernel takes up to kSmallBatchRows rows (gemm.h says why that is 1).
#include <cuda_bf16.h>

#include "common/strings.h"
#include "kernels/cuda_status.h"
#include "kernels/device_types.cuh"
#include "kernels/gemm.h"

namespace strata::kernels {
namespace {

constexpr int kGemvWarps = 8;
constexpr int kGemvThreads = kGemvWarps * kWarpSize;
constexpr int kElementsPerVector = 8;  // bf16 in one 16-byte load

// Weight loads bypass L1 (read once) but x's rows, shared by every warp, stay cached.
__device__ __forceinline__ uint4 LoadStreaming(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ float Dot8(uint4 w, uint4 x) {
  const __nv_bfloat162* wp = reinterpret_cast<const __nv_bfloat162*>(&w);
  const __nv_bfloat162* xp = reinterpret_cast<const __nv_bfloat162*>(&x);
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 a = __bfloat1622float2(wp[i]), b = __bfloat1622float2(xp[i]);
    sum += a.x * b.x + a.y * b.y;
  }
  return sum;
}

// GEMV for up to kMaxRows rows. Grid: out_features / 8 blocks; block: 8 warps, one output feature each.
// A warp streams its weight row in 16-byte vectors (lane-strided: each load instruction of the warp
// covers 512 contiguous bytes), keeping kUnroll loads in flight, multiplies with each of the `rows`
// input rows (16-byte loads, L1/L2-resident) and reduces across lanes. Bytes: out * in * 2 (W, once)
// + rows * (in + out) * 2; FLOPs 2 * rows * out * in. Precision: bf16 inputs, float32 accumulation.
template <int kMaxRows>
__global__ void __launch_bounds__(kGemvThreads) GemvKernel(const bf16* __restrict__ x, int rows, int64_t in,
                                                           const bf16* __restrict__ w, int64_t out_features,
                                                           bf16* __restrict__ out) {
  constexpr int kUnroll = 4;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t o = int64_t{blockIdx.x} * kGemvWarps + threadIdx.x / kWarpSize;
  if (o >= out_features) return;
  const uint4* wrow = reinterpret_cast<const uint4*>(w + o * in);
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  const int64_t vectors = in / kElementsPerVector;
  float acc[kMaxRows] = {};
  int64_t c = lane;
  for (; c + (kUnroll - 1) * kWarpSize < vectors; c += kUnroll * kWarpSize) {
    uint4 wv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) wv[u] = LoadStreaming(wrow + c + u * kWarpSize);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int r = 0; r < kMaxRows; ++r) {
        if (r < rows) acc[r] += Dot8(wv[u], xv[r * vectors + c + u * kWarpSize]);
      }
    }
  }
  for (; c < vectors; c += kWarpSize) {
    const uint4 wv = LoadStreaming(wrow + c);
#pragma unroll
    for (int r = 0; r < kMaxRows; ++r) {
      if (r < rows) acc[r] += Dot8(wv, xv[r * vectors + c]);
    }
  }
#pragma unroll
  for (int r = 0; r < kMaxRows; ++r) {
    if (r >= rows) break;
    const float sum = WarpSum(acc[r]);
    if (lane == 0) out[r * out_features + o] = __float2bfloat16_rn(sum);
  }
}

}  // namespace

bool SmallBatchLinearApplies(DType dtype, int64_t rows, int64_t in_features, const void* x, const void* weight) {
  return dtype == DType::kBF16 && rows >= 1 && rows <= kSmallBatchRows && in_features % kElementsPerVector == 0 &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(weight) % 16 == 0;
}

absl::Status SmallBatchLinear(const void* x, int64_t rows, int64_t in_features, const void* weight,
                              int64_t out_features, void* out, cudaStream_t stream) {
  if (!SmallBatchLinearApplies(DType::kBF16, rows, in_features, x, weight) || out_features <= 0) {
    return absl::InvalidArgumentError(StrCat("SmallBatchLinear: ", rows, " rows of ", in_features, " to ",
                                             out_features, " (BF16, 1..", kSmallBatchRows,
                                             " rows, in_features a multiple of 8, 16-byte aligned)"));
  }
  const unsigned blocks = static_cast<unsigned>((out_features + kGemvWarps - 1) / kGemvWarps);
  GemvKernel<kSmallBatchRows><<<blocks, kGemvThreads, 0, stream>>>(
      static_cast<const bf16*>(x), static_cast<int>(rows), in_features, static_cast<const bf16*>(weight),
      out_features, static_cast<bf16*>(out));
  STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("GemvKernel");
  return absl::OkStatus();
}

}  // namespace strata::kernels
