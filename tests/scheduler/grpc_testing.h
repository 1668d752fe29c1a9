// gRPC helpers for the scheduler's service and process tests.
#ifndef STRATA_TESTS_SCHEDULER_GRPC_TESTING_H_
#define STRATA_TESTS_SCHEDULER_GRPC_TESTING_H_

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/impl/codegen/rpc_method.h>

#include <chrono>
#include <string>

namespace strata::scheduler::testing {

// grpc.health.v1.Health/Check for the whole server (service ""), without generated health stubs: the
// request is empty and a SERVING response is the two bytes 08 01. Returns the status enum (1 SERVING,
// 2 NOT_SERVING) or -1 when the call failed.
inline int HealthStatus(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  const grpc::internal::RpcMethod method("/grpc.health.v1.Health/Check", grpc::internal::RpcMethod::NORMAL_RPC);
  const grpc::Slice empty(std::string{});
  grpc::ByteBuffer request(&empty, 1), response;  // a valid, empty message
  grpc::Status status = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
      channel.get(), method, &context, request, &response);
  if (!status.ok()) return -1;
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return -1;
  std::string bytes;
  for (const grpc::Slice& slice : slices) bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  if (bytes.empty()) return 0;  // UNKNOWN is the default value, encoded as nothing
  if (bytes.size() != 2 || bytes[0] != 0x08) return -1;
  return bytes[1];
}

}  // namespace strata::scheduler::testing

#endif  // STRATA_TESTS_SCHEDULER_GRPC_TESTING_H_
