// Helpers of the kernel tests: skip without a GPU, device arrays filled from host floats (rounded to the
// kernel's dtype, so the CPU reference sees the exact inputs) or int32s, NaN-poisoned outputs, error measures.
#ifndef STRATA_TESTS_KERNELS_DEVICE_TEST_UTIL_H_
#define STRATA_TESTS_KERNELS_DEVICE_TEST_UTIL_H_

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/cuda_owners.h"

namespace strata::kernels::testing {

// In a test body: skips (with the reason printed) when no CUDA device is usable.
#define STRATA_SKIP_WITHOUT_GPU()                                                     \
  do {                                                                                \
    auto strata_devices_ = ::strata::kernels::VisibleDeviceCount();                   \
    if (!strata_devices_.ok()) {                                                      \
      GTEST_SKIP() << "no usable CUDA device: " << strata_devices_.status().message(); \
    }                                                                                 \
  } while (false)

inline std::vector<float> RandomFloats(size_t n, std::mt19937& rng, float stddev = 1.0f) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Rounds values to what `dtype` can hold (identity for F32).
inline void RoundTo(DType dtype, std::vector<float>& v) {
  if (dtype == DType::kBF16) {
    for (float& x : v) x = Bf16ToF32(F32ToBf16(x));
  }
}

// A device array of `dtype` elements, filled from host floats or poisoned (all bytes 0xFF: NaN in F32 and
// BF16), read back as floats.
class DeviceArray {
 public:
  DeviceArray(DType dtype, size_t count) : dtype_(dtype), count_(count) {
    auto buffer = DeviceBuffer::Allocate(std::max<size_t>(count, 1) * DTypeSize(dtype));
    EXPECT_TRUE(buffer.ok()) << buffer.status();
    buffer_ = *std::move(buffer);
    Poison();
  }
  DeviceArray(DType dtype, const std::vector<float>& values) : DeviceArray(dtype, values.size()) { Set(values); }

  void Set(const std::vector<float>& values) {
    EXPECT_EQ(values.size(), count_);
    if (dtype_ == DType::kF32) {
      EXPECT_EQ(cudaMemcpy(buffer_.data(), values.data(), count_ * 4, cudaMemcpyHostToDevice), cudaSuccess);
    } else {
      std::vector<uint16_t> halves(count_);
      for (size_t i = 0; i < count_; ++i) halves[i] = F32ToBf16(values[i]);
      EXPECT_EQ(cudaMemcpy(buffer_.data(), halves.data(), count_ * 2, cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  void Poison() { EXPECT_EQ(cudaMemset(buffer_.data(), 0xFF, buffer_.bytes()), cudaSuccess); }
  std::vector<float> Get() const {
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<float> out(count_);
    if (dtype_ == DType::kF32) {
      EXPECT_EQ(cudaMemcpy(out.data(), buffer_.data(), count_ * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    } else {
      std::vector<uint16_t> halves(count_);
      EXPECT_EQ(cudaMemcpy(halves.data(), buffer_.data(), count_ * 2, cudaMemcpyDeviceToHost), cudaSuccess);
      for (size_t i = 0; i < count_; ++i) out[i] = Bf16ToF32(halves[i]);
    }
    return out;
  }
  void* data() const { return buffer_.data(); }
  template <typename T>
  T* data() const {
    return static_cast<T*>(buffer_.data());
  }
  DType dtype() const { return dtype_; }

 private:
  DType dtype_;
  size_t count_;
  DeviceBuffer buffer_;
};

// A device copy of host int32 values (block tables, slots, positions).
inline DeviceBuffer DeviceInt32s(const std::vector<int32_t>& values) {
  auto buffer = DeviceBuffer::Allocate(std::max<size_t>(values.size(), 1) * sizeof(int32_t));
  EXPECT_TRUE(buffer.ok()) << buffer.status();
  EXPECT_EQ(cudaMemcpy(buffer->data(), values.data(), values.size() * sizeof(int32_t), cudaMemcpyHostToDevice),
            cudaSuccess);
  return *std::move(buffer);
}

// ‖a − b‖ / ‖b‖ in double; infinity when any element of `a` is not finite where b is (an unwritten,
// poisoned output).
inline double RelativeError(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isfinite(b[i]) && !std::isfinite(a[i])) return INFINITY;
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    norm += static_cast<double>(b[i]) * b[i];
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

inline double MaxAbsError(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isinf(a[i]) && std::isinf(b[i]) && (a[i] > 0) == (b[i] > 0)) continue;
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(d <= worst)) worst = std::isnan(d) ? INFINITY : d;
  }
  return worst;
}

// Bound for a BF16 result against a float64 reference over the same (rounded) inputs: the output's own
// rounding (2^-9 relative) plus float32 accumulation.
inline constexpr double kBf16Tolerance = 1e-2;
inline constexpr double kF32Tolerance = 2e-6;

inline double ToleranceFor(DType dtype) { return dtype == DType::kBF16 ? kBf16Tolerance : kF32Tolerance; }

}  // namespace strata::kernels::testing

#endif  // STRATA_TESTS_KERNELS_DEVICE_TEST_UTIL_H_
