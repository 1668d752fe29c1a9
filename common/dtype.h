// Element types of tensors in checkpoints, on backends and in KV blocks, with the scalar conversions
// between them. Conversions round to nearest even, as PyTorch does.
#ifndef STRATA_COMMON_DTYPE_H_
#define STRATA_COMMON_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "absl/types/span.h"

namespace strata {

enum class DType : uint8_t { kF32, kF16, kBF16 };

// Bytes per element.
size_t DTypeSize(DType dtype);
// Name as safetensors writes it: "F32", "F16", "BF16".
std::string_view DTypeName(DType dtype);
// Inverse of DTypeName; nullopt for any other name.
std::optional<DType> DTypeFromName(std::string_view name);

inline float Bf16ToF32(uint16_t bits) {
  uint32_t widened = static_cast<uint32_t>(bits) << 16;
  float out;
  std::memcpy(&out, &widened, sizeof(out));
  return out;
}

inline uint16_t F32ToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float F16ToF32(uint16_t bits);
uint16_t F32ToF16(float value);

// Converts `count` elements of `dtype` starting at `src` (any alignment) to float32.
void ConvertToF32(DType dtype, const std::byte* src, absl::Span<float> dst);

}  // namespace strata

#endif  // STRATA_COMMON_DTYPE_H_
