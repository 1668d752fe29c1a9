// The gRPC service on loopback: registration errors, the KV event stream with a gap and its resync,
// routing by tokens and by keys, health, /metrics.
#include "scheduler/service.h"

#include <httplib.h>

#include <numeric>

#include "absl/time/clock.h"
#include "common/rpc.h"
#include "common/strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/scheduler.grpc.pb.h"
#include "scheduler/block_index.h"
#include "tests/scheduler/grpc_testing.h"
#include "tests/scheduler/scheduler_testing.h"

namespace strata::scheduler {
namespace {

class SchedulerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(absl::Seconds(5)); }

  void StartServer(absl::Duration lease) {
    server_.reset();
    Options options;
    options.lease = lease;
    options.grpc_address = "127.0.0.1:0";
    options.metrics_host = "127.0.0.1";
    options.metrics_port = 0;
    auto server = SchedulerServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ =
        grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->grpc_port()), grpc::InsecureChannelCredentials());
    stub_ = proto::Scheduler::NewStub(channel_);
  }

  static proto::RegisterRequest WorkerRequest(const std::string& id) {
    proto::RegisterRequest request;
    request.set_holder_id(id);
    request.set_kind(proto::HOLDER_KIND_WORKER);
    request.set_address(id + ":7000");
    proto::KeyScheme* scheme = request.mutable_key_scheme();
    scheme->set_version(kBlockKeySchemeVersion);
    scheme->set_block_tokens(4);
    scheme->set_kv_dtype("BF16");
    std::string fingerprint(32, '\0');
    std::iota(fingerprint.begin(), fingerprint.end(), 0);
    scheme->set_model_fingerprint(fingerprint);
    proto::WorkerInfo* w = request.mutable_worker();
    w->set_gpu_kv_blocks(100);
    w->set_host_kv_blocks(100);
    w->set_block_bytes(1'000'000);
    w->set_prefill_linear_s_per_token(1e-3);
    w->set_host_to_gpu_bytes_per_s(1e9);
    w->set_network_bytes_per_s(1e9);
    return request;
  }

  grpc::Status Register(const proto::RegisterRequest& request, proto::RegisterResponse* response) {
    grpc::ClientContext context;
    SetDeadline(context, std::chrono::seconds(5));
    return stub_->Register(&context, request, response);
  }

  std::unique_ptr<SchedulerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<proto::Scheduler::Stub> stub_;
};

TEST_F(SchedulerServiceTest, RegistrationKeepsTheWorkersModelNameAndKeyScheme) {
  proto::RegisterRequest request = WorkerRequest("w-name");
  request.mutable_worker()->set_model_name("llama-3-8b");
  absl::StatusOr<Registration> registration = RegistrationFromProto(request);
  ASSERT_TRUE(registration.ok()) << registration.status();
  EXPECT_EQ(registration->worker.model_name, "llama-3-8b");
  EXPECT_EQ(std::string(registration->key_context.model_fingerprint.begin(),
                        registration->key_context.model_fingerprint.end()),
            request.key_scheme().model_fingerprint());
  EXPECT_EQ(registration->key_context.block_tokens, 4u);
}

TEST_F(SchedulerServiceTest, RegistrationErrorsCarryTheirGrpcCodes) {
  proto::RegisterResponse response;
  ASSERT_TRUE(Register(WorkerRequest("w0"), &response).ok());
  EXPECT_GT(response.epoch(), 0u);
  EXPECT_EQ(response.lease_ms(), 5000u);
  EXPECT_TRUE(response.send_inventory());

  EXPECT_EQ(Register(WorkerRequest("w0"), &response).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  proto::RegisterRequest bad = WorkerRequest("w1");
  bad.mutable_key_scheme()->set_version(2);
  grpc::Status status = Register(bad, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find("version 2"), std::string::npos) << status.error_message();
  bad = WorkerRequest("w1");
  bad.mutable_key_scheme()->set_model_fingerprint("short");
  EXPECT_EQ(Register(bad, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  bad = WorkerRequest("w1");
  bad.mutable_key_scheme()->set_kv_dtype("INT3");
  EXPECT_EQ(Register(bad, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  bad = WorkerRequest("w1");
  bad.set_kind(proto::HOLDER_KIND_UNSPECIFIED);
  EXPECT_EQ(Register(bad, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  grpc::ClientContext context;
  SetDeadline(context, std::chrono::seconds(5));
  proto::HeartbeatRequest beat;
  beat.set_holder_id("nobody");
  proto::HeartbeatResponse beat_response;
  EXPECT_EQ(stub_->Heartbeat(&context, beat, &beat_response).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(SchedulerServiceTest, KvEventStreamAppliesInventoryEventsAndAsksForResyncOnAGap) {
  proto::RegisterResponse registered;
  ASSERT_TRUE(Register(WorkerRequest("w0"), &registered).ok());
  std::vector<int32_t> tokens(10);
  std::iota(tokens.begin(), tokens.end(), 1000);
  BlockKeyContext context;
  std::iota(context.model_fingerprint.begin(), context.model_fingerprint.end(), 0);
  context.block_tokens = 4;
  const std::vector<BlockKey> keys = ComputeBlockKeys(context, tokens);

  grpc::ClientContext stream_context;
  SetDeadline(stream_context, std::chrono::seconds(10));
  auto stream = stub_->KvEvents(&stream_context);
  proto::KvEventMessage message;
  message.set_holder_id("w0");
  message.set_epoch(registered.epoch());
  message.mutable_inventory()->set_sequence(10);
  proto::TierBlocks* tier = message.mutable_inventory()->add_tiers();
  tier->set_tier(proto::TIER_GPU);
  tier->set_keys(PackKeys({keys[0]}));
  proto::KvEvent* event = message.add_events();
  event->set_sequence(11);
  event->set_type(proto::KvEvent::TYPE_STORED);
  event->set_tier(proto::TIER_HOST);
  event->set_keys(PackKeys({keys[1]}));
  ASSERT_TRUE(stream->Write(message));
  proto::KvEventReply reply;
  ASSERT_TRUE(stream->Read(&reply));
  EXPECT_EQ(reply.applied_sequence(), 11u);
  EXPECT_FALSE(reply.resync_required());

  // Route by tokens: both blocks are found on w0 (G then H).
  {
    grpc::ClientContext route_context;
    SetDeadline(route_context, std::chrono::seconds(5));
    proto::RouteRequest route;
    route.set_model_fingerprint(std::string(context.model_fingerprint.begin(), context.model_fingerprint.end()));
    for (int32_t t : tokens) route.add_token_ids(t);
    proto::RouteResponse routed;
    ASSERT_TRUE(stub_->Route(&route_context, route, &routed).ok());
    EXPECT_EQ(routed.worker_id(), "w0");
    EXPECT_EQ(routed.worker_address(), "w0:7000");
    EXPECT_EQ(routed.blocks_gpu(), 1u);
    EXPECT_EQ(routed.blocks_host(), 1u);
    EXPECT_EQ(routed.prefill_tokens(), 2u);
    EXPECT_EQ(routed.prompt_blocks(), 2u);
    EXPECT_EQ(routed.policy(), proto::POLICY_CACHE_AWARE);
  }

  // A gap (13 after 11): nothing applied, resync asked for; the inventory clears it.
  message.Clear();
  message.set_holder_id("w0");
  message.set_epoch(registered.epoch());
  event = message.add_events();
  event->set_sequence(13);
  event->set_type(proto::KvEvent::TYPE_EVICTED);
  event->set_keys(PackKeys({keys[0]}));
  ASSERT_TRUE(stream->Write(message));
  ASSERT_TRUE(stream->Read(&reply));
  EXPECT_TRUE(reply.resync_required());
  EXPECT_EQ(reply.applied_sequence(), 11u);
  message.Clear();
  message.set_holder_id("w0");
  message.set_epoch(registered.epoch());
  message.mutable_inventory()->set_sequence(13);
  ASSERT_TRUE(stream->Write(message));
  ASSERT_TRUE(stream->Read(&reply));
  EXPECT_FALSE(reply.resync_required());
  EXPECT_EQ(reply.applied_sequence(), 13u);

  // A malformed event ends the stream with INVALID_ARGUMENT.
  message.Clear();
  message.set_holder_id("w0");
  message.set_epoch(registered.epoch());
  event = message.add_events();
  event->set_sequence(14);
  event->set_type(proto::KvEvent::TYPE_STORED);
  event->set_tier(proto::TIER_GPU);
  event->set_keys("seventeen bytes!!");
  stream->Write(message);
  stream->WritesDone();
  while (stream->Read(&reply)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  grpc::ClientContext list_context;
  SetDeadline(list_context, std::chrono::seconds(5));
  proto::ListHoldersResponse holders;
  ASSERT_TRUE(stub_->ListHolders(&list_context, proto::ListHoldersRequest(), &holders).ok());
  ASSERT_EQ(holders.holders_size(), 1);
  EXPECT_EQ(holders.holders(0).applied_sequence(), 13u);
  EXPECT_EQ(holders.index_blocks(), 0u);
}

TEST_F(SchedulerServiceTest, EventsOfAnUnknownHolderEndTheStreamWithNotFound) {
  grpc::ClientContext context;
  SetDeadline(context, std::chrono::seconds(5));
  auto stream = stub_->KvEvents(&context);
  proto::KvEventMessage message;
  message.set_holder_id("ghost");
  message.set_epoch(1);
  proto::KvEvent* event = message.add_events();
  event->set_sequence(1);
  event->set_type(proto::KvEvent::TYPE_STORED);
  event->set_tier(proto::TIER_GPU);
  stream->Write(message);
  stream->WritesDone();
  proto::KvEventReply reply;
  while (stream->Read(&reply)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(server_->scheduler().IndexBlocks(), 0u);
}

// A worker that dies mid-stream: what it sent stays applied, the stream ends, and within a lease (plus
// one reaper pass) it leaves placement and the index.
TEST_F(SchedulerServiceTest, AWorkerThatVanishesMidStreamLeavesWithinItsLease) {
  StartServer(absl::Milliseconds(600));
  proto::RegisterResponse w0, w1;
  ASSERT_TRUE(Register(WorkerRequest("w0"), &w0).ok());
  ASSERT_TRUE(Register(WorkerRequest("w1"), &w1).ok());
  std::vector<int32_t> tokens(8, 5);
  BlockKeyContext context;
  std::iota(context.model_fingerprint.begin(), context.model_fingerprint.end(), 0);
  context.block_tokens = 4;
  const std::vector<BlockKey> keys = ComputeBlockKeys(context, tokens);
  {
    grpc::ClientContext stream_context;
    SetDeadline(stream_context, std::chrono::seconds(10));
    auto stream = stub_->KvEvents(&stream_context);
    proto::KvEventMessage message;
    message.set_holder_id("w0");
    message.set_epoch(w0.epoch());
    proto::KvEvent* event = message.add_events();
    event->set_sequence(1);
    event->set_type(proto::KvEvent::TYPE_STORED);
    event->set_tier(proto::TIER_GPU);
    event->set_keys(PackKeys(keys));
    ASSERT_TRUE(stream->Write(message));
    proto::KvEventReply reply;
    ASSERT_TRUE(stream->Read(&reply));
    EXPECT_EQ(reply.applied_sequence(), 1u);
    stream_context.TryCancel();  // the process is gone: no WritesDone, no Finish
  }
  EXPECT_EQ(server_->scheduler().IndexBlocks(), 2u);
  // w1 keeps heartbeating; w0 does not.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (server_->scheduler().Holders().size() != 1 && absl::Now() < deadline) {
    grpc::ClientContext beat_context;
    SetDeadline(beat_context, std::chrono::seconds(5));
    proto::HeartbeatRequest beat;
    beat.set_holder_id("w1");
    beat.set_epoch(w1.epoch());
    proto::HeartbeatResponse beat_response;
    ASSERT_TRUE(stub_->Heartbeat(&beat_context, beat, &beat_response).ok());
    absl::SleepFor(absl::Milliseconds(100));  // the heartbeat interval; the loop waits on a condition
  }
  ASSERT_EQ(server_->scheduler().Holders().size(), 1u);
  EXPECT_EQ(server_->scheduler().Holders()[0].holder_id, "w1");
  EXPECT_EQ(server_->scheduler().IndexBlocks(), 0u);
  grpc::ClientContext route_context;
  SetDeadline(route_context, std::chrono::seconds(5));
  proto::RouteRequest route;
  route.set_model_fingerprint(std::string(context.model_fingerprint.begin(), context.model_fingerprint.end()));
  for (int32_t t : tokens) route.add_token_ids(t);
  proto::RouteResponse routed;
  ASSERT_TRUE(stub_->Route(&route_context, route, &routed).ok());
  EXPECT_EQ(routed.worker_id(), "w1");
}

TEST_F(SchedulerServiceTest, ASecondServerOnTheSamePortIsRefused) {
  Options options;
  options.grpc_address = StrCat("127.0.0.1:", server_->grpc_port());
  options.metrics_host = "127.0.0.1";
  options.metrics_port = 0;
  EXPECT_EQ(SchedulerServer::Start(options).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(testing::HealthStatus(channel_), 1);  // the first one still serves
  // (The /metrics port is not checked: cpp-httplib sets SO_REUSEPORT, so common/daemon.h's server binds a
  // port that is in use.)
}

TEST_F(SchedulerServiceTest, RouteRefusesBadRequests) {
  proto::RegisterResponse registered;
  ASSERT_TRUE(Register(WorkerRequest("w0"), &registered).ok());
  auto route = [&](const proto::RouteRequest& request) {
    grpc::ClientContext context;
    SetDeadline(context, std::chrono::seconds(5));
    proto::RouteResponse response;
    return stub_->Route(&context, request, &response).error_code();
  };
  proto::RouteRequest request;
  request.set_model_fingerprint("short");
  request.add_token_ids(1);
  EXPECT_EQ(route(request), grpc::StatusCode::INVALID_ARGUMENT);
  std::string fingerprint(32, '\0');
  std::iota(fingerprint.begin(), fingerprint.end(), 0);
  request.set_model_fingerprint(fingerprint);
  request.set_block_keys(std::string(16, 'k'));
  EXPECT_EQ(route(request), grpc::StatusCode::INVALID_ARGUMENT);  // both tokens and keys
  request.clear_token_ids();
  EXPECT_EQ(route(request), grpc::StatusCode::INVALID_ARGUMENT);  // keys without prompt_tokens
  request.set_prompt_tokens(8);
  request.set_block_keys(std::string(15, 'k'));
  EXPECT_EQ(route(request), grpc::StatusCode::INVALID_ARGUMENT);  // not 16-byte keys
  request.set_block_keys(std::string(32, 'k'));
  EXPECT_EQ(route(request), grpc::StatusCode::OK);
  request.set_model_fingerprint(std::string(32, 'x'));
  EXPECT_EQ(route(request), grpc::StatusCode::UNAVAILABLE);  // no worker of that model
}

TEST_F(SchedulerServiceTest, HealthAndMetricsAnswerAndShutdownStopsServing) {
  EXPECT_EQ(testing::HealthStatus(channel_), 1);
  proto::RegisterResponse registered;
  ASSERT_TRUE(Register(WorkerRequest("w0"), &registered).ok());
  httplib::Client http("127.0.0.1", server_->metrics_port());
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  for (const char* name :
       {"strata_scheduler_holders{kind=\"worker\"} 1", "strata_scheduler_index_blocks",
        "strata_scheduler_routes_total{policy=\"cache-aware\"}",
        "strata_scheduler_seconds_since_kv_event{holder=\"w0\"} -1", "strata_scheduler_kv_sequence_gaps_total",
        "strata_scheduler_route_seconds_bucket", "strata_scheduler_resync_pending_holders 0"}) {
    EXPECT_NE(metrics->body.find(name), std::string::npos) << name;
  }
  auto health = http.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  server_->Shutdown(absl::Seconds(1));
  EXPECT_NE(testing::HealthStatus(channel_), 1);
}

// Per-holder series leave /metrics with their holder, so that they do not pile up with every rollout.
TEST_F(SchedulerServiceTest, ADeregisteredHoldersSeriesLeaveMetrics) {
  proto::RegisterResponse w0, w1;
  ASSERT_TRUE(Register(WorkerRequest("w0"), &w0).ok());
  ASSERT_TRUE(Register(WorkerRequest("w1"), &w1).ok());
  httplib::Client http("127.0.0.1", server_->metrics_port());
  auto before = http.Get("/metrics");
  ASSERT_TRUE(before);
  EXPECT_THAT(before->body, ::testing::HasSubstr("strata_scheduler_seconds_since_kv_event{holder=\"w0\"}"));
  proto::DeregisterRequest request;
  request.set_holder_id("w0");
  request.set_epoch(w0.epoch());
  grpc::ClientContext context;
  SetDeadline(context, std::chrono::seconds(5));
  proto::DeregisterResponse response;
  ASSERT_TRUE(stub_->Deregister(&context, request, &response).ok());
  auto after = http.Get("/metrics");
  ASSERT_TRUE(after);
  EXPECT_THAT(after->body, ::testing::Not(::testing::HasSubstr("holder=\"w0\"")));
  EXPECT_THAT(after->body, ::testing::HasSubstr("strata_scheduler_seconds_since_kv_event{holder=\"w1\"}"));
  // Registering again brings the series back.
  ASSERT_TRUE(Register(WorkerRequest("w0"), &w0).ok());
  auto again = http.Get("/metrics");
  ASSERT_TRUE(again);
  EXPECT_THAT(again->body, ::testing::HasSubstr("strata_scheduler_seconds_since_kv_event{holder=\"w0\"}"));
}

}  // namespace
}  // namespace strata::scheduler
