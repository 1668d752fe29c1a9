// Device-side element helpers shared by the kernels: float <-> storage type conversions, 16-byte vectors,
// warp and block reductions. Private to kernels/.
#ifndef STRATA_KERNELS_DEVICE_TYPES_CUH_
#define STRATA_KERNELS_DEVICE_TYPES_CUH_

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace strata::kernels {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(bf16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 FromFloat<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

// Elements of T in one 16-byte access.
template <typename T>
constexpr int kVecElements = 16 / sizeof(T);

template <typename T>
struct alignas(16) Vec {
  T v[kVecElements<T>];
};

constexpr int kWarpSize = 32;

__device__ __forceinline__ float WarpSum(float x) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

__device__ __forceinline__ float WarpMax(float x) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

// Sum of `x` over the block; every thread gets the result. `scratch` holds one float per warp.
// REQUIRES: blockDim.x is a multiple of 32, at most 1024.
__device__ __forceinline__ float BlockSum(float x, float* scratch) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  x = WarpSum(x);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < warps ? scratch[lane] : 0.0f;
  return WarpSum(x);
}

// A counter-based random number in [0, 1): SplitMix64 of (seed, counter), 24 bits of mantissa.
__device__ __forceinline__ float UniformFloat(uint64_t seed, uint64_t counter) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (counter + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
}

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_DEVICE_TYPES_CUH_
