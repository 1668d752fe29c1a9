// Every request handler of the scheduler's gRPC service (scheduler/service.h), KvEvents' stream included,
// called through an in-process gRPC server over a real Scheduler. An input is a sequence of calls
// (fuzz_input.h): a method byte, then the request's protobuf bytes; for KvEvents the bytes are themselves
// a sequence of length-prefixed KvEventMessages. A request that names a holder with epoch 0 gets the
// epoch of that holder's last registration, as the holder itself would send, so sequences get past the
// epoch check into heartbeats, events and routes.
//
// Property: no handler crashes the daemon or hangs, whatever the bytes.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "common/metrics.h"
#include "fuzz/fuzz_input.h"
#include "proto/scheduler.grpc.pb.h"
#include "scheduler/clock.h"
#include "scheduler/scheduler.h"
#include "scheduler/service.h"

namespace strata::scheduler {
namespace {

struct Daemon {
  Daemon() {
    options.index_capacity_blocks = 4096;
    scheduler = std::make_unique<Scheduler>(options, &clock, &metrics);
    service = std::make_unique<SchedulerService>(scheduler.get());
    service->set_options(options);
    grpc::ServerBuilder builder;
    builder.RegisterService(service.get());
    server = builder.BuildAndStart();
    STRATA_FUZZ_ASSERT(server != nullptr);
    stub = proto::Scheduler::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  }

  Options options;
  RealClock clock;
  MetricsRegistry metrics;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<SchedulerService> service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<proto::Scheduler::Stub> stub;
  std::map<std::string, uint64_t> epochs;  // holder id -> epoch of its last registration
};

Daemon& TheDaemon() {
  static Daemon* daemon = new Daemon();  // lives until exit: the server's threads may still run then
  return *daemon;
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return context;
}

template <typename Request>
bool Parse(std::string_view bytes, Request* request) {
  if (!request->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return false;
  if constexpr (requires { request->epoch(); }) {
    if (request->epoch() == 0) {
      const auto it = TheDaemon().epochs.find(request->holder_id());
      if (it != TheDaemon().epochs.end()) request->set_epoch(it->second);
    }
  }
  return true;
}

template <typename Request, typename Response, typename Method>
void Call(Method method, std::string_view bytes) {
  Request request;
  if (!Parse(bytes, &request)) return;
  Response response;
  auto context = Context();
  const grpc::Status status = (TheDaemon().stub.get()->*method)(context.get(), request, &response);
  STRATA_FUZZ_ASSERT(status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED);
  if constexpr (std::is_same_v<Request, proto::RegisterRequest>) {
    if (status.ok()) TheDaemon().epochs[request.holder_id()] = response.epoch();
  }
}

void KvEvents(std::string_view bytes) {
  auto context = Context();
  auto stream = TheDaemon().stub->KvEvents(context.get());
  fuzz::InputReader messages(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  proto::KvEventReply reply;
  for (int i = 0; i < 16 && !messages.empty(); ++i) {
    proto::KvEventMessage message;
    if (!Parse(messages.Chunk(), &message)) continue;
    if (!stream->Write(message)) break;
    if (!stream->Read(&reply)) break;
  }
  stream->WritesDone();
  while (stream->Read(&reply)) {
  }
  const grpc::Status status = stream->Finish();
  STRATA_FUZZ_ASSERT(status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED);
}

}  // namespace
}  // namespace strata::scheduler

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace strata::scheduler;
  namespace proto = strata::proto;
  using Stub = proto::Scheduler::Stub;
  TheDaemon();
  strata::fuzz::InputReader input(data, size);
  for (int calls = 0; calls < 32 && !input.empty(); ++calls) {
    const uint8_t method = input.Byte().value_or(0) % 6;
    const std::string_view bytes = input.Chunk();
    switch (method) {
      case 0: Call<proto::RegisterRequest, proto::RegisterResponse>(&Stub::Register, bytes); break;
      case 1: Call<proto::HeartbeatRequest, proto::HeartbeatResponse>(&Stub::Heartbeat, bytes); break;
      case 2: Call<proto::DeregisterRequest, proto::DeregisterResponse>(&Stub::Deregister, bytes); break;
      case 3: KvEvents(bytes); break;
      case 4: Call<proto::RouteRequest, proto::RouteResponse>(&Stub::Route, bytes); break;
      case 5: Call<proto::ListHoldersRequest, proto::ListHoldersResponse>(&Stub::ListHolders, bytes); break;
    }
  }
  return 0;
}
