#include "worker/prefix/block_mac.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstring>
#include <string>

#include "absl/strings/ascii.h"
#include "common/file.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/strings.h"

namespace strata::worker {
namespace {

constexpr std::string_view kKeyLabel = "strata-kv-mac-key-v1";
constexpr std::string_view kMacLabel = "strata-kv-mac-v1";
constexpr int kIvBytes = 16;
constexpr int kTagBytes = 16;
static_assert(kIvBytes + kTagBytes == kBlockMacBytes);

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};

}  // namespace

struct BlockMac::Cipher {
  EVP_CIPHER* cipher = nullptr;
  ~Cipher() { EVP_CIPHER_free(cipher); }
};

BlockMac::BlockMac(const std::array<uint8_t, 32>& aes_key) : aes_key_(aes_key), cipher_(std::make_shared<Cipher>()) {
  // Fetched once: EVP_aes_256_gcm() would look the implementation up again on every call.
  cipher_->cipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  STRATA_CHECK(cipher_->cipher != nullptr);  // libcrypto without AES-GCM is not a supported build
}

absl::StatusOr<BlockMac> BlockMac::FromSecret(absl::Span<const uint8_t> secret) {
  if (secret.size() < kMinMacSecretBytes) {
    return absl::InvalidArgumentError(StrCat("KV MAC secret of ", secret.size(), " bytes; need at least ",
                                             kMinMacSecretBytes, " (e.g. `openssl rand -base64 48`)"));
  }
  Sha256 sha;
  sha.Update(kKeyLabel);
  sha.Update(secret);
  return BlockMac(sha.Finish());
}

absl::StatusOr<BlockMac> BlockMac::FromFile(const std::filesystem::path& path) {
  STRATA_ASSIGN_OR_RETURN(std::string contents, ReadFile(path));
  const absl::string_view secret = absl::StripAsciiWhitespace(contents);
  absl::StatusOr<BlockMac> mac =
      FromSecret(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(secret.data()), secret.size()));
  if (!mac.ok()) return absl::InvalidArgumentError(StrCat(path.string(), ": ", mac.status().message()));
  return mac;
}

BlockMac BlockMac::Generate() {
  std::array<uint8_t, 32> secret{};
  STRATA_CHECK(RAND_bytes(secret.data(), static_cast<int>(secret.size())) == 1);
  absl::StatusOr<BlockMac> mac = FromSecret(secret);
  STRATA_CHECK(mac.ok());
  return *std::move(mac);
}

std::array<uint8_t, 16> BlockMac::Tag(const BlockKey& key, absl::Span<const std::byte> payload,
                                      const uint8_t* iv) const {
  // Failures below mean libcrypto is unusable (out of memory): a crash, as in common/sha256.cc.
  std::unique_ptr<EVP_CIPHER_CTX, CtxFree> ctx(EVP_CIPHER_CTX_new());
  STRATA_CHECK(ctx != nullptr);
  STRATA_CHECK(EVP_EncryptInit_ex(ctx.get(), cipher_->cipher, nullptr, nullptr, nullptr) == 1);
  STRATA_CHECK(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kIvBytes, nullptr) == 1);
  STRATA_CHECK(EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, aes_key_.data(), iv) == 1);
  int out = 0;
  auto aad = [&](const void* data, size_t bytes) {
    // EVP takes int lengths: a payload past 2 GiB goes in pieces.
    const auto* p = static_cast<const uint8_t*>(data);
    while (bytes > 0) {
      const int piece = static_cast<int>(std::min<size_t>(bytes, 1u << 30));
      STRATA_CHECK(EVP_EncryptUpdate(ctx.get(), nullptr, &out, p, piece) == 1);
      p += piece;
      bytes -= static_cast<size_t>(piece);
    }
  };
  aad(kMacLabel.data(), kMacLabel.size());
  aad(key.bytes.data(), key.bytes.size());
  aad(payload.data(), payload.size());
  STRATA_CHECK(EVP_EncryptFinal_ex(ctx.get(), nullptr, &out) == 1);
  std::array<uint8_t, 16> tag{};
  STRATA_CHECK(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes, tag.data()) == 1);
  return tag;
}

void BlockMac::Seal(const BlockKey& key, absl::Span<const std::byte> payload, absl::Span<std::byte> trailer) const {
  STRATA_CHECK(trailer.size() == kBlockMacBytes);
  auto* iv = reinterpret_cast<uint8_t*>(trailer.data());
  STRATA_CHECK(RAND_bytes(iv, kIvBytes) == 1);
  const std::array<uint8_t, 16> tag = Tag(key, payload, iv);
  std::memcpy(trailer.data() + kIvBytes, tag.data(), tag.size());
}

bool BlockMac::Verify(const BlockKey& key, absl::Span<const std::byte> payload,
                      absl::Span<const std::byte> trailer) const {
  if (trailer.size() != kBlockMacBytes) return false;
  const std::array<uint8_t, 16> tag = Tag(key, payload, reinterpret_cast<const uint8_t*>(trailer.data()));
  return CRYPTO_memcmp(tag.data(), trailer.data() + kIvBytes, kTagBytes) == 0;
}

}  // namespace strata::worker
