#include "common/block_key.h"

#include <cstring>

#include "common/status.h"
#include "common/strings.h"

namespace strata {
namespace {

constexpr std::string_view kSchemeTag = "strata-kv-v1";

BlockKey Truncate(const Sha256Digest& digest) {
  BlockKey key;
  std::memcpy(key.bytes.data(), digest.data(), key.bytes.size());
  return key;
}

uint64_t LoadLe64(const uint8_t* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

uint64_t BlockKey::Low64() const { return LoadLe64(bytes.data()); }
uint64_t BlockKey::High64() const { return LoadLe64(bytes.data() + 8); }

absl::StatusOr<BlockKey> BlockKeyFromBytes(std::string_view raw) {
  BlockKey key;
  if (raw.size() != key.bytes.size()) {
    return absl::InvalidArgumentError(
        StrCat("block key must be ", key.bytes.size(), " bytes, got ", raw.size()));
  }
  std::memcpy(key.bytes.data(), raw.data(), raw.size());
  return key;
}

absl::StatusOr<BlockKey> BlockKeyFromHex(std::string_view hex) {
  BlockKey key;
  if (hex.size() != 2 * key.bytes.size()) {
    return absl::InvalidArgumentError(
        StrCat("block key must be ", 2 * key.bytes.size(), " hex digits, got ", hex.size()));
  }
  for (size_t i = 0; i < key.bytes.size(); ++i) {
    int high = HexValue(hex[2 * i]);
    int low = HexValue(hex[2 * i + 1]);
    if (high < 0 || low < 0) {
      return absl::InvalidArgumentError(StrCat("block key '", hex, "' is not hex (position ", 2 * i, ")"));
    }
    key.bytes[i] = static_cast<uint8_t>(high << 4 | low);
  }
  return key;
}

Sha256Digest TenantSalt(std::string_view tenant, std::string_view cache_salt) {
  Sha256 hasher;
  hasher.Update(std::string_view("strata-tenant-v1"));
  hasher.UpdateLe64(tenant.size());
  hasher.Update(tenant);
  hasher.UpdateLe64(cache_salt.size());
  hasher.Update(cache_salt);
  return hasher.Finish();
}

BlockKey RootKey(const BlockKeyContext& context) {
  Sha256 hasher;
  hasher.Update(kSchemeTag);
  hasher.Update(absl::MakeConstSpan(context.model_fingerprint));
  const uint32_t tokens = context.block_tokens;
  const uint8_t le_tokens[4] = {static_cast<uint8_t>(tokens), static_cast<uint8_t>(tokens >> 8),
                                static_cast<uint8_t>(tokens >> 16), static_cast<uint8_t>(tokens >> 24)};
  hasher.Update(absl::MakeConstSpan(le_tokens));
  const uint8_t dtype = static_cast<uint8_t>(context.kv_dtype);
  hasher.Update(absl::MakeConstSpan(&dtype, 1));
  hasher.Update(absl::MakeConstSpan(context.tenant_salt));
  return Truncate(hasher.Finish());
}

BlockKey ChainKey(const BlockKey& previous, absl::Span<const int32_t> block_token_ids) {
  // Token ids as little-endian 32-bit words, whatever the host's byte order.
  std::vector<uint8_t> buffer(previous.bytes.size() + 4 * block_token_ids.size());
  std::memcpy(buffer.data(), previous.bytes.data(), previous.bytes.size());
  uint8_t* out = buffer.data() + previous.bytes.size();
  for (int32_t id : block_token_ids) {
    const uint32_t v = static_cast<uint32_t>(id);
    out[0] = static_cast<uint8_t>(v);
    out[1] = static_cast<uint8_t>(v >> 8);
    out[2] = static_cast<uint8_t>(v >> 16);
    out[3] = static_cast<uint8_t>(v >> 24);
    out += 4;
  }
  Sha256 hasher;
  hasher.Update(absl::MakeConstSpan(buffer));
  return Truncate(hasher.Finish());
}

std::vector<BlockKey> ComputeBlockKeys(const BlockKeyContext& context, absl::Span<const int32_t> token_ids) {
  STRATA_CHECK(context.block_tokens > 0);
  std::vector<BlockKey> keys;
  const size_t blocks = token_ids.size() / context.block_tokens;
  keys.reserve(blocks);
  BlockKey previous = RootKey(context);
  for (size_t i = 0; i < blocks; ++i) {
    previous = ChainKey(previous, token_ids.subspan(i * context.block_tokens, context.block_tokens));
    keys.push_back(previous);
  }
  return keys;
}

}  // namespace strata
