// Callers' identities: an API-key file maps `Authorization: Bearer <key>` to a tenant, so the tenant (and
// with it the KV sharing domain, ARCHITECTURE.md "Tenants") comes from the server's own table, never from
// the request, and to the key's own limits and models. Without a file, every caller is one Caller of tenant
// "default", and FrontDoor::TenantOf gives each client its own tenant unless the prefix cache is shared.
//
// The file (a path, so a Kubernetes secret mounted as a file works as is) has one key per line:
//
//   key tenant [rps=R] [burst=B] [concurrency=C] [models=a,b]
//
// Blank lines and `#` comments are skipped. The options override the server's --rate-limit-rps,
// --rate-limit-burst and --max-concurrent-requests-per-key for that key (0: unlimited); `models` lists
// the served model names the key may use (absent: all). Keys are held only as SHA-256 digests and found
// by digest, so neither a comparison's time nor a log line tells anything about a key.
#ifndef STRATA_SCHEDULER_FRONTDOOR_API_KEYS_H_
#define STRATA_SCHEDULER_FRONTDOOR_API_KEYS_H_

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "scheduler/frontdoor/limits.h"

namespace strata::frontdoor {

inline constexpr std::string_view kDefaultTenant = "default";

// One key's identity and what the file says about it.
struct Caller {
  int index = 0;  // 0..size()-1: the CallerLimiter's id of the key
  std::string tenant;
  std::optional<double> rate_rps;
  std::optional<double> burst;
  std::optional<int64_t> concurrency;
  std::vector<std::string> models;  // empty: every model

  bool MayUse(std::string_view model) const;
  // The server's limits with this key's overrides.
  CallerLimits LimitsOver(const CallerLimits& server) const;
};

// Immutable after construction; thread-safe.
class ApiKeys {
 public:
  // Everyone is one caller, tenant "default" (FrontDoor::TenantOf narrows it per client); no key is needed.
  ApiKeys();
  // InvalidArgument naming the file and line (never the key) for a malformed line, an unknown option or
  // a bad value, a repeated key, or a file without keys; NotFound when the file cannot be read.
  static absl::StatusOr<ApiKeys> Load(const std::filesystem::path& path);

  bool required() const { return required_; }
  size_t size() const { return callers_.size(); }

  // The caller of an `Authorization` header value. Unauthenticated (401, code invalid_api_key) when
  // keys are required and the header is missing, not `Bearer <key>`, or names no known key.
  absl::StatusOr<const Caller*> Find(std::string_view authorization) const;

 private:
  bool required_ = false;
  std::vector<Caller> callers_;
  absl::flat_hash_map<std::string, int> by_digest_;  // SHA-256 of the key -> index in callers_
};

}  // namespace strata::frontdoor

#endif  // STRATA_SCHEDULER_FRONTDOOR_API_KEYS_H_
