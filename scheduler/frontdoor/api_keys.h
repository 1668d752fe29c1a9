// Callers' identities: an API-key file maps `Authorization: Bearer <key>` to a tenant, so the tenant (and
// with it the KV sharing domain, ARCHITECTURE.md "Tenants") comes from the server's own table, never from
// the request. Without a file, every caller is tenant "default".
#ifndef STRATA_SCHEDULER_FRONTDOOR_API_KEYS_H_
#define STRATA_SCHEDULER_FRONTDOOR_API_KEYS_H_

#include <filesystem>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace strata::frontdoor {

inline constexpr std::string_view kDefaultTenant = "default";

// Immutable after construction; thread-safe.
class ApiKeys {
 public:
  // Everyone is tenant "default"; no key is needed.
  ApiKeys() = default;
  // Lines `key tenant` (blank lines and `#` comments skipped). InvalidArgument naming the line for a
  // malformed one or a repeated key; NotFound when the file cannot be read.
  static absl::StatusOr<ApiKeys> Load(const std::filesystem::path& path);

  bool required() const { return required_; }
  size_t size() const { return tenants_.size(); }

  // The tenant of an `Authorization` header value. Unauthenticated (401, code invalid_api_key) when
  // keys are required and the header is missing, not `Bearer <key>`, or names no known key.
  absl::StatusOr<std::string> TenantOf(std::string_view authorization) const;

 private:
  bool required_ = false;
  absl::flat_hash_map<std::string, std::string> tenants_;  // key -> tenant
};

}  // namespace strata::frontdoor

#endif  // STRATA_SCHEDULER_FRONTDOOR_API_KEYS_H_
