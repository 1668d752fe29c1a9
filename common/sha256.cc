#include "common/sha256.h"

#include <openssl/evp.h>

#include "common/status.h"

namespace strata {

struct Sha256::Context {
  struct Free {
    void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
  };
  std::unique_ptr<EVP_MD_CTX, Free> ctx{EVP_MD_CTX_new()};
};

Sha256::Sha256() : context_(std::make_unique<Context>()) {
  // Failure here means libcrypto is unusable (out of memory at start-up): a crash, not a Status.
  STRATA_CHECK(context_->ctx != nullptr);
  STRATA_CHECK(EVP_DigestInit_ex(context_->ctx.get(), EVP_sha256(), nullptr) == 1);
}
Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

void Sha256::Update(absl::Span<const uint8_t> bytes) {
  STRATA_CHECK(EVP_DigestUpdate(context_->ctx.get(), bytes.data(), bytes.size()) == 1);
}

void Sha256::Update(std::string_view bytes) {
  STRATA_CHECK(EVP_DigestUpdate(context_->ctx.get(), bytes.data(), bytes.size()) == 1);
}

void Sha256::UpdateLe64(uint64_t value) {
  uint8_t le[8];
  for (int i = 0; i < 8; ++i) le[i] = static_cast<uint8_t>(value >> (8 * i));
  Update(absl::MakeConstSpan(le));
}

Sha256Digest Sha256::Finish() {
  Sha256Digest digest;
  unsigned int length = 0;
  STRATA_CHECK(EVP_DigestFinal_ex(context_->ctx.get(), digest.data(), &length) == 1);
  STRATA_CHECK(length == digest.size());
  return digest;
}

Sha256Digest Sha256Of(std::string_view bytes) {
  Sha256 hasher;
  hasher.Update(bytes);
  return hasher.Finish();
}

std::string ToHex(absl::Span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xf]);
  }
  return out;
}

}  // namespace strata
