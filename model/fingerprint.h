// Model fingerprint: names the exact model whose KV a block holds, so KV of one model is never served
// to another. Block keys (common/) start from it.
#ifndef STRATA_MODEL_FINGERPRINT_H_
#define STRATA_MODEL_FINGERPRINT_H_

#include <string>
#include <string_view>

#include "common/sha256.h"
#include "model/checkpoint.h"

namespace strata::model {

struct ModelFingerprint {
  Sha256Digest digest;
  std::string Hex() const { return ToHex(digest); }
  friend bool operator==(const ModelFingerprint&, const ModelFingerprint&) = default;
};

// SHA-256 over a scheme tag, `config_canonical` (the architecture and every config field that changes
// the KV: the caller's canonical text, see ModelConfig::Canonical()), and, for each tensor in name
// order, its name, dtype, shape and the hash of all of its bytes. The same for a single file and any
// sharding of it. Thread-safe; uses all cores while hashing.
ModelFingerprint ComputeFingerprint(std::string_view config_canonical, const Checkpoint& checkpoint);

}  // namespace strata::model

#endif  // STRATA_MODEL_FINGERPRINT_H_
