// SHA-256 over OpenSSL's libcrypto: model fingerprints and (later) block keys.
#ifndef STRATA_COMMON_SHA256_H_
#define STRATA_COMMON_SHA256_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/types/span.h"

namespace strata {

using Sha256Digest = std::array<uint8_t, 32>;

// Incremental SHA-256. Not thread-safe: one hasher per thread. Move-only.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  void Update(absl::Span<const uint8_t> bytes);
  void Update(std::string_view bytes);
  // Appends `value` as 8 little-endian bytes, so lengths and counts hash the same on every machine.
  void UpdateLe64(uint64_t value);
  // Returns the digest; the hasher must not be used afterwards.
  Sha256Digest Finish();

 private:
  struct Context;
  std::unique_ptr<Context> context_;
};

Sha256Digest Sha256Of(std::string_view bytes);

// Lower-case hex of `bytes`.
std::string ToHex(absl::Span<const uint8_t> bytes);

}  // namespace strata

#endif  // STRATA_COMMON_SHA256_H_
