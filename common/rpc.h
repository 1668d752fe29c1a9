// The gRPC edge: absl::Status <-> grpc::Status (absl codes are gRPC codes, so the mapping is 1:1) and
// deadlines. Every client call carries a deadline.
#ifndef STRATA_COMMON_RPC_H_
#define STRATA_COMMON_RPC_H_

#include <chrono>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"

namespace strata {

absl::Status FromGrpcStatus(const grpc::Status& status);
grpc::Status ToGrpcStatus(const absl::Status& status);

// A client context whose deadline is `timeout` from now.
inline void SetDeadline(grpc::ClientContext& context, std::chrono::milliseconds timeout) {
  context.set_deadline(std::chrono::system_clock::now() + timeout);
}

}  // namespace strata

#endif  // STRATA_COMMON_RPC_H_
