#include "scheduler/frontdoor/api_keys.h"

#include <fstream>
#include <sstream>

#include "common/strings.h"
#include "scheduler/frontdoor/request.h"

namespace strata::frontdoor {

absl::StatusOr<ApiKeys> ApiKeys::Load(const std::filesystem::path& path) {
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(StrCat(path.string(), ": cannot open the API-key file"));
  ApiKeys keys;
  keys.required_ = true;
  std::string line;
  int number = 0;
  while (std::getline(file, line)) {
    ++number;
    std::istringstream fields(line);
    std::string key, tenant, extra;
    if (!(fields >> key) || key[0] == '#') continue;
    if (!(fields >> tenant) || (fields >> extra)) {
      return absl::InvalidArgumentError(StrCat(path.string(), ":", number, ": expected `key tenant`"));
    }
    if (!keys.tenants_.emplace(key, tenant).second) {
      return absl::InvalidArgumentError(StrCat(path.string(), ":", number, ": this key appeared on an earlier line"));
    }
  }
  if (keys.tenants_.empty()) return absl::InvalidArgumentError(StrCat(path.string(), ": no keys"));
  return keys;
}

absl::StatusOr<std::string> ApiKeys::TenantOf(std::string_view authorization) const {
  if (!required_) return std::string(kDefaultTenant);
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.substr(0, kBearer.size()) != kBearer || authorization.size() == kBearer.size()) {
    return ApiError(absl::StatusCode::kUnauthenticated,
                    "You didn't provide an API key. You need to provide your API key in an Authorization header "
                    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    "invalid_api_key");
  }
  auto found = tenants_.find(std::string(authorization.substr(kBearer.size())));
  if (found == tenants_.end()) {
    return ApiError(absl::StatusCode::kUnauthenticated, "Incorrect API key provided.", "invalid_api_key");
  }
  return found->second;
}

}  // namespace strata::frontdoor
