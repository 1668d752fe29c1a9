// UCX return codes become absl::Status here, once (STYLE.md: third-party codes at the edge). Header-only,
// shared by the daemon (kvstore/) and the client (kvstore/client/).
#ifndef STRATA_KVSTORE_UCX_STATUS_H_
#define STRATA_KVSTORE_UCX_STATUS_H_

#include <ucp/api/ucp.h>

#include <string_view>

#include "absl/status/status.h"
#include "common/strings.h"

namespace strata::kvstore {

inline absl::Status FromUcsStatus(ucs_status_t status, std::string_view call) {
  if (status == UCS_OK) return absl::OkStatus();
  const std::string message = StrCat(call, ": ", ucs_status_string(status));
  switch (status) {
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
    case UCS_ERR_EXCEEDS_LIMIT:
      return absl::ResourceExhaustedError(message);
    case UCS_ERR_INVALID_PARAM:
      return absl::InvalidArgumentError(message);
    case UCS_ERR_TIMED_OUT:
      return absl::DeadlineExceededError(message);
    case UCS_ERR_CANCELED:
      return absl::CancelledError(message);
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_REJECTED:
      return absl::UnavailableError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace strata::kvstore

// Returns a Status naming the UCX call when `expr` (a ucs_status_t) is not UCS_OK.
#define STRATA_UCX_RETURN_IF_ERROR(expr) STRATA_RETURN_IF_ERROR(::strata::kvstore::FromUcsStatus((expr), #expr))

#endif  // STRATA_KVSTORE_UCX_STATUS_H_
