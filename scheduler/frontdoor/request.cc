#include "scheduler/frontdoor/request.h"

#include <cstdlib>

#include "absl/strings/cord.h"
#include "common/strings.h"

namespace strata::frontdoor {
namespace {

constexpr char kCodeUrl[] = "strata.frontdoor/openai_code";
constexpr char kParamUrl[] = "strata.frontdoor/param";
constexpr char kHttpUrl[] = "strata.frontdoor/http_status";
constexpr char kRetryAfterUrl[] = "strata.frontdoor/retry_after_s";
constexpr char kRefusalUrl[] = "strata.frontdoor/refusal";

std::string Payload(const absl::Status& status, const char* url) {
  absl::optional<absl::Cord> payload = status.GetPayload(url);
  return payload.has_value() ? std::string(*payload) : std::string();
}

}  // namespace

absl::Status ApiError(absl::StatusCode code, std::string_view message, std::string_view openai_code,
                      std::string_view param, int http_status) {
  absl::Status status(code, absl::string_view(message.data(), message.size()));
  if (!openai_code.empty()) status.SetPayload(kCodeUrl, absl::Cord(absl::string_view(openai_code.data(), openai_code.size())));
  if (!param.empty()) status.SetPayload(kParamUrl, absl::Cord(absl::string_view(param.data(), param.size())));
  if (http_status != 0) status.SetPayload(kHttpUrl, absl::Cord(StrCat(http_status)));
  return status;
}

int HttpStatusOf(const absl::Status& status) {
  const std::string explicit_status = Payload(status, kHttpUrl);
  if (!explicit_status.empty()) return std::atoi(explicit_status.c_str());
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

std::string_view OpenAiTypeOf(const absl::Status& status) {
  switch (HttpStatusOf(status)) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
    case 413:
      return "invalid_request_error";  // OpenAI's type for model_not_found
    case 429:
      return "requests";
    case 502:
    case 503:
      return "service_unavailable_error";
    default:
      return "api_error";
  }
}

std::string OpenAiCodeOf(const absl::Status& status) { return Payload(status, kCodeUrl); }
std::string OpenAiParamOf(const absl::Status& status) { return Payload(status, kParamUrl); }

absl::Status WithRetryAfter(absl::Status status, int64_t seconds) {
  status.SetPayload(kRetryAfterUrl, absl::Cord(StrCat(seconds)));
  return status;
}

int64_t RetryAfterOf(const absl::Status& status) {
  const std::string seconds = Payload(status, kRetryAfterUrl);
  return seconds.empty() ? 0 : std::atoll(seconds.c_str());
}

absl::Status WithRefusal(absl::Status status, std::string_view reason) {
  status.SetPayload(kRefusalUrl, absl::Cord(absl::string_view(reason.data(), reason.size())));
  return status;
}

std::string RefusalReasonOf(const absl::Status& status) {
  std::string reason = Payload(status, kRefusalUrl);
  return reason.empty() ? std::string(RefusalReasonOf(HttpStatusOf(status))) : reason;
}

std::string_view RefusalReasonOf(int http_status) {
  switch (http_status) {
    case 401:
      return "invalid_api_key";
    case 403:
      return "permission_denied";
    case 404:
      return "not_found";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit";
    default:
      return "invalid_request";
  }
}

}  // namespace strata::frontdoor
