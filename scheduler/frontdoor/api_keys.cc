#include "scheduler/frontdoor/api_keys.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/sha256.h"
#include "common/strings.h"
#include "scheduler/frontdoor/request.h"

namespace strata::frontdoor {
namespace {

std::string DigestOf(std::string_view key) {
  const Sha256Digest digest = Sha256Of(key);
  return std::string(digest.begin(), digest.end());
}

// Applies one `name=value` option to `caller`; the error names the option, never the line's key.
absl::Status ApplyOption(const std::string& option, Caller& caller) {
  const size_t equals = option.find('=');
  if (equals == std::string::npos) return absl::InvalidArgumentError(StrCat("expected option=value, got '", option, "'"));
  const std::string name = option.substr(0, equals);
  const std::string value = option.substr(equals + 1);
  double number = 0;
  if (name == "rps" || name == "burst") {
    if (!absl::SimpleAtod(value, &number) || !(number >= 0) || std::isinf(number)) {
      return absl::InvalidArgumentError(StrCat(name, "=", value, ": expected a number >= 0"));
    }
    (name == "rps" ? caller.rate_rps : caller.burst) = number;
  } else if (name == "concurrency") {
    int64_t count = 0;
    if (!absl::SimpleAtoi(value, &count) || count < 0) {
      return absl::InvalidArgumentError(StrCat(name, "=", value, ": expected an integer >= 0"));
    }
    caller.concurrency = count;
  } else if (name == "models") {
    for (absl::string_view model : absl::StrSplit(value, ',', absl::SkipEmpty())) caller.models.emplace_back(model);
    if (caller.models.empty()) return absl::InvalidArgumentError("models=: expected model names, comma-separated");
  } else {
    return absl::InvalidArgumentError(
        StrCat("unknown option '", name, "' (known: rps, burst, concurrency, models)"));
  }
  return absl::OkStatus();
}

}  // namespace

bool Caller::MayUse(std::string_view model) const {
  return models.empty() || std::find(models.begin(), models.end(), model) != models.end();
}

CallerLimits Caller::LimitsOver(const CallerLimits& server) const {
  CallerLimits limits = server;
  if (rate_rps) limits.rate_rps = *rate_rps;
  if (burst) limits.burst = *burst;
  if (concurrency) limits.concurrency = *concurrency;
  return limits;
}

ApiKeys::ApiKeys() { callers_.push_back(Caller{0, std::string(kDefaultTenant)}); }

absl::StatusOr<ApiKeys> ApiKeys::Load(const std::filesystem::path& path) {
  std::ifstream file(path);
  if (!file) return absl::NotFoundError(StrCat(path.string(), ": cannot open the API-key file"));
  ApiKeys keys;
  keys.required_ = true;
  keys.callers_.clear();
  std::string line;
  int number = 0;
  while (std::getline(file, line)) {
    ++number;
    std::istringstream fields(line);
    std::string key, tenant, option;
    if (!(fields >> key) || key[0] == '#') continue;
    if (!(fields >> tenant)) {
      return absl::InvalidArgumentError(StrCat(path.string(), ":", number, ": expected `key tenant [option=value ...]`"));
    }
    Caller caller;
    caller.index = static_cast<int>(keys.callers_.size());
    caller.tenant = tenant;
    while (fields >> option) {
      if (absl::Status applied = ApplyOption(option, caller); !applied.ok()) {
        return absl::InvalidArgumentError(StrCat(path.string(), ":", number, ": ", applied.message()));
      }
    }
    if (!keys.by_digest_.emplace(DigestOf(key), caller.index).second) {
      return absl::InvalidArgumentError(StrCat(path.string(), ":", number, ": this key appeared on an earlier line"));
    }
    keys.callers_.push_back(std::move(caller));
  }
  if (keys.callers_.empty()) return absl::InvalidArgumentError(StrCat(path.string(), ": no keys"));
  return keys;
}

absl::StatusOr<const Caller*> ApiKeys::Find(std::string_view authorization) const {
  if (!required_) return &callers_[0];
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.substr(0, kBearer.size()) != kBearer || authorization.size() == kBearer.size()) {
    return ApiError(absl::StatusCode::kUnauthenticated,
                    "You didn't provide an API key. You need to provide your API key in an Authorization header "
                    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    "invalid_api_key");
  }
  // Looked up by digest: how long the lookup takes depends on the digest, which tells nothing about
  // how close the presented key is to a real one.
  auto found = by_digest_.find(DigestOf(authorization.substr(kBearer.size())));
  if (found == by_digest_.end()) {
    return ApiError(absl::StatusCode::kUnauthenticated, "Incorrect API key provided.", "invalid_api_key");
  }
  return &callers_[found->second];
}

}  // namespace strata::frontdoor
