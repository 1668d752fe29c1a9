// Block keys, scheme v1: the public contract by which workers, kvstores and the scheduler name KV blocks.
//
// A block is `block_tokens` consecutive tokens; its key names the whole prefix that ends with it, so two
// requests share a block exactly when they share every token up to its end (and the model, block size,
// KV dtype and tenant). This is the one function in Strata that computes keys; nothing else may.
//
//   root    = SHA-256("strata-kv-v1" ‖ model_fingerprint[32] ‖ le32(block_tokens) ‖ u8(kv_dtype) ‖ tenant_salt[32])
//   key_i   = SHA-256(key_{i-1} ‖ le32(token ids of block i)),  key_{-1} = root
//   each truncated to its first 16 bytes (the 16-byte truncation of root is what key_0 chains from).
//
// kv_dtype is the byte value of strata::DType (kF32 = 0, kF16 = 1, kBF16 = 2). tenant_salt is the
// SHA-256 of the tenant's identity as the *server* derives it (all zero bytes: no tenant, the
// single-tenant default); a client may narrow sharing with a cache_salt, which the server hashes into
// the tenant salt, never widen it. Partial trailing blocks get no key.
#ifndef STRATA_COMMON_BLOCK_KEY_H_
#define STRATA_COMMON_BLOCK_KEY_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "common/sha256.h"

namespace strata {

// Processes report this when they register; a mismatch is refused.
inline constexpr uint32_t kBlockKeySchemeVersion = 1;

// 16 bytes, compared and hashed as two 64-bit words. Trivially copyable, fixed width.
struct BlockKey {
  std::array<uint8_t, 16> bytes{};

  std::string Hex() const { return ToHex(bytes); }
  // The first 8 bytes as a little-endian integer: a well-mixed hash for tables.
  uint64_t Low64() const;
  uint64_t High64() const;
  // The 16 raw bytes, for protobuf `bytes` fields.
  std::string ToBytes() const { return std::string(bytes.begin(), bytes.end()); }

  friend bool operator==(const BlockKey&, const BlockKey&) = default;
  friend auto operator<=>(const BlockKey&, const BlockKey&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const BlockKey& key) {
    return H::combine(std::move(h), key.Low64(), key.High64());
  }
};

// Parses 16 raw bytes (a protobuf `bytes` field); InvalidArgument for any other length.
absl::StatusOr<BlockKey> BlockKeyFromBytes(std::string_view bytes);
// Parses 32 lower- or upper-case hex digits.
absl::StatusOr<BlockKey> BlockKeyFromHex(std::string_view hex);

// What a key's root depends on besides the tokens.
struct BlockKeyContext {
  Sha256Digest model_fingerprint{};
  uint32_t block_tokens = 256;
  DType kv_dtype = DType::kBF16;
  Sha256Digest tenant_salt{};  // all zero: no tenant
};

// SHA-256 of a tenant identity, e.g. the tenant name an API key maps to. `cache_salt` (may be empty)
// narrows sharing within the tenant.
Sha256Digest TenantSalt(std::string_view tenant, std::string_view cache_salt = {});

// The root of the chain (key_{-1}); exposed so callers can extend a chain block by block.
BlockKey RootKey(const BlockKeyContext& context);
// key_i from key_{i-1} and the `block_tokens` token ids of block i. Thread-safe.
BlockKey ChainKey(const BlockKey& previous, absl::Span<const int32_t> block_token_ids);

// The keys of every full block of `token_ids` (token_ids.size() / block_tokens of them). Thread-safe.
std::vector<BlockKey> ComputeBlockKeys(const BlockKeyContext& context, absl::Span<const int32_t> token_ids);

}  // namespace strata

#endif  // STRATA_COMMON_BLOCK_KEY_H_
