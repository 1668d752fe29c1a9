// grpc.health.v1.Health/Check over a generic call (Debian ships no health.proto to generate a stub from).
#ifndef STRATA_TESTS_SECURITY_HEALTH_CHECK_H_
#define STRATA_TESTS_SECURITY_HEALTH_CHECK_H_

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <string>

namespace strata::testing {

enum class Health { kServing, kNotServing, kRefused };

// The server-wide status ("" service) at `channel`; kRefused when the call fails (status in `error`).
inline Health CheckHealth(const std::shared_ptr<grpc::Channel>& channel, grpc::Status* error = nullptr) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::CompletionQueue queue;
  grpc::ByteBuffer request(nullptr, 0);  // an empty HealthCheckRequest
  grpc::ByteBuffer response;
  grpc::Status status;
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &queue);
  call->StartCall();
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  queue.Next(&tag, &ok);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  if (error != nullptr) *error = status;
  if (!status.ok()) return Health::kRefused;
  grpc::Slice slice;
  std::string bytes;
  if (response.DumpToSingleSlice(&slice).ok()) bytes.assign(reinterpret_cast<const char*>(slice.begin()), slice.size());
  // HealthCheckResponse{status = 1}: field 1, varint: 0x08 0x01 is SERVING, 0x08 0x02 NOT_SERVING.
  return bytes == std::string("\x08\x01", 2) ? Health::kServing : Health::kNotServing;
}

}  // namespace strata::testing

#endif  // STRATA_TESTS_SECURITY_HEALTH_CHECK_H_
