// BlockMac: the worker's signature on a KV block, so that only workers can vouch for KV (ARCHITECTURE.md,
// "Only workers can vouch for KV"). The kvstore's xxh3 catches corruption; it is computed by whoever
// writes the block, so it catches no forgery. This MAC is keyed by a secret that only workers hold.
//
// Construction (MAC v1): AES-256-GMAC, i.e. AES-256-GCM with no plaintext and
//   AAD = "strata-kv-mac-v1" ‖ block key[16] ‖ payload,
// under a fresh random 16-byte IV per block. The 32-byte trailer stored after each payload is
// IV[16] ‖ tag[16]. A random IV, not one derived from the block key: two workers may compute different
// bytes for one key (GPU numerics), and GMAC under a repeated IV gives its hash key away. With 128-bit
// IVs a repeat is negligible at any realistic block count (2^-64 after 2^32 blocks).
//
// The 32-byte AES key is SHA-256("strata-kv-mac-key-v1" ‖ secret), the secret being the contents of
// --kv-mac-key-file (every worker of a cluster the same, so one worker's blocks verify on another), or
// 32 random bytes per process when none is given (blocks then verify only on the worker that wrote them).
//
// Speed: AES-NI and carry-less multiply; docs/BENCHMARKS.md ("KV block MAC") has the numbers against xxh3.
// Thread-safe (const methods; each call uses its own OpenSSL context).
#ifndef STRATA_WORKER_PREFIX_BLOCK_MAC_H_
#define STRATA_WORKER_PREFIX_BLOCK_MAC_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/block_key.h"

namespace strata::worker {

// Bytes of the trailer after each payload: IV[16] ‖ tag[16].
inline constexpr size_t kBlockMacBytes = 32;
// Fewest bytes of secret a key file must hold.
inline constexpr size_t kMinMacSecretBytes = 32;

class BlockMac {
 public:
  // From the secret's bytes; InvalidArgument when shorter than kMinMacSecretBytes.
  static absl::StatusOr<BlockMac> FromSecret(absl::Span<const uint8_t> secret);
  // From a key file's contents (surrounding whitespace trimmed, so a Secret written by `openssl rand
  // -base64 48` works as is). Errors name the file: NotFound, PermissionDenied, InvalidArgument (too short).
  static absl::StatusOr<BlockMac> FromFile(const std::filesystem::path& path);
  // A random secret: blocks this process writes verify only here.
  static BlockMac Generate();

  // Writes the trailer (kBlockMacBytes) for `payload` stored under `key`.
  void Seal(const BlockKey& key, absl::Span<const std::byte> payload, absl::Span<std::byte> trailer) const;
  // Whether `trailer` is this secret's MAC of (`key`, `payload`) (constant-time comparison). False for a
  // trailer of the wrong size.
  bool Verify(const BlockKey& key, absl::Span<const std::byte> payload, absl::Span<const std::byte> trailer) const;

 private:
  struct Cipher;
  explicit BlockMac(const std::array<uint8_t, 32>& aes_key);
  // The tag of (`key`, `payload`) under `iv`.
  std::array<uint8_t, 16> Tag(const BlockKey& key, absl::Span<const std::byte> payload, const uint8_t* iv) const;

  std::array<uint8_t, 32> aes_key_{};
  std::shared_ptr<Cipher> cipher_;  // the fetched AES-256-GCM implementation, shared by copies
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_PREFIX_BLOCK_MAC_H_
