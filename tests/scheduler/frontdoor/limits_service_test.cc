// The front door's keys and limits end to end on loopback: a real scheduler (SchedulerServer), a real
// Worker service over the CPU engine on llama3-tiny (engine_worker.h), and the front door's HTTP and gRPC
// faces. Every refusal is checked for its status, OpenAI's error shape, its headers, its metric, and for
// not having reached the worker.
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "proto/frontdoor.grpc.pb.h"
#include "scheduler/frontdoor/frontdoor.h"
#include "scheduler/service.h"
#include "tests/scheduler/frontdoor/engine_worker.h"
#include "tests/scheduler/frontdoor/frontdoor_testing.h"
#include "tests/testing/child_process.h"
#include "tests/testing/scratch_dir.h"

namespace strata::frontdoor {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;
using strata::testing::WaitFor;

const std::string kModelDir = std::string(STRATA_TEST_DATA_DIR) + "/models/llama3-tiny";
constexpr char kModel[] = "llama3-tiny";

// OpenAI's error object, all four fields present.
Json ErrorOf(const httplib::Result& result) {
  const Json body = Json::parse(result->body, nullptr, false);
  EXPECT_TRUE(body.is_object() && body.contains("error")) << result->body;
  if (!body.is_object() || !body.contains("error")) return Json::object();
  const Json& error = body["error"];
  for (const char* field : {"message", "type", "param", "code"}) EXPECT_TRUE(error.contains(field)) << result->body;
  return error;
}

// Sends POST `path` with a chunked body of `kib` 1 KiB chunks that never ends, then bytes that would be
// a second request if the server took the rest of the body for one, and returns what the server answers
// (read until it closes the connection or 20 s pass).
std::string ChunkedUpload(int port, const std::string& path, int kib) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return "connect failed";
  }
  timeval timeout{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string out = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
                    "Transfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < kib; ++i) out += "400\r\n" + std::string(1024, ' ') + "\r\n";
  out += "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  (void)!::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
  std::string response;
  char buffer[4096];
  for (ssize_t n; (n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0;) response.append(buffer, static_cast<size_t>(n));
  ::close(fd);
  return response;
}

class LimitsTest : public ::testing::Test {
 protected:
  // A scheduler, one worker (kept across restarts of the front door) and a front door with `options`'
  // limits and `keys` as its API-key file (empty: none).
  void Start(scheduler::Options options, const std::string& keys = "") {
    door_.reset();
    server_.reset();
    const scheduler::Options base = testing::LoopbackSchedulerOptions();
    absl::StatusOr<std::unique_ptr<scheduler::SchedulerServer>> server = scheduler::SchedulerServer::Start(base);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    if (worker_ == nullptr) {
      absl::StatusOr<std::unique_ptr<testing::EngineWorker>> worker = testing::EngineWorker::Start(kModelDir, kModel);
      ASSERT_TRUE(worker.ok()) << worker.status();
      worker_ = *std::move(worker);
    }
    ASSERT_TRUE(server_->scheduler().Register(worker_->MakeRegistration("worker-0")).ok());
    options.model_dir = kModelDir;
    options.http_host = "127.0.0.1";
    options.http_port = 0;
    options.frontdoor_grpc_address = "127.0.0.1:0";
    options.request_timeout = absl::Seconds(30);
    if (!keys.empty()) {
      std::ofstream(dir_.path() / "keys") << keys;
      options.api_keys_file = (dir_.path() / "keys").string();
    }
    absl::StatusOr<std::unique_ptr<FrontDoor>> door = FrontDoor::Start(options, &server_->scheduler());
    ASSERT_TRUE(door.ok()) << door.status();
    door_ = *std::move(door);
    http_ = std::make_unique<httplib::Client>("127.0.0.1", door_->http_port());
    http_->set_read_timeout(30, 0);
    stub_ = proto::FrontDoor::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(door_->grpc_port()),
                                                          grpc::InsecureChannelCredentials()));
  }

  httplib::Result Post(const std::string& path, const std::string& body, const std::string& key = "") {
    httplib::Headers headers;
    if (!key.empty()) headers.emplace("Authorization", "Bearer " + key);
    return http_->Post(path.c_str(), headers, body, "application/json");
  }
  httplib::Result Complete(const std::string& key, int max_tokens = 1) {
    return Post("/v1/completions",
                Json{{"model", kModel}, {"prompt", {5, 6, 7}}, {"max_tokens", max_tokens}, {"ignore_eos", true}}.dump(),
                key);
  }
  grpc::Status GrpcComplete(const std::string& key) {
    proto::CompleteRequest request;
    request.set_model(kModel);
    request.mutable_token_ids()->mutable_ids()->Add(5);
    request.mutable_options()->set_max_tokens(1);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (!key.empty()) context.AddMetadata("authorization", "Bearer " + key);
    auto reader = stub_->Complete(&context, request);
    proto::CompletionChunk chunk;
    while (reader->Read(&chunk)) {
    }
    return reader->Finish();
  }
  std::string Metrics() { return door_->metrics().RenderText(); }
  static std::string Refusals(const std::string& reason, int count) {
    return "strata_frontdoor_refusals_total{reason=\"" + reason + "\"} " + std::to_string(count) + "\n";
  }

  strata::testing::ScratchDir dir_ = strata::testing::MakeTempDir("frontdoor_limits");
  std::unique_ptr<testing::EngineWorker> worker_;
  std::unique_ptr<scheduler::SchedulerServer> server_;
  std::unique_ptr<FrontDoor> door_;
  std::unique_ptr<httplib::Client> http_;
  std::unique_ptr<proto::FrontDoor::Stub> stub_;
};

TEST_F(LimitsTest, ApiKeysAre401And403InOpenAisShape) {
  Start({}, "sk-a team-a\nsk-other team-b models=some-other-model\n");
  httplib::Result none = Complete("");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(none->get_header_value("WWW-Authenticate"), "Bearer");
  EXPECT_EQ(ErrorOf(none)["code"], "invalid_api_key");
  httplib::Result unknown = Complete("sk-a2");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 401);
  EXPECT_EQ(unknown->get_header_value("WWW-Authenticate"), "Bearer");
  EXPECT_EQ(ErrorOf(unknown)["code"], "invalid_api_key");
  EXPECT_THAT(ErrorOf(unknown)["message"].get<std::string>(), ::testing::Not(HasSubstr("sk-a2")));

  // A valid key asking for a model it may not use.
  httplib::Result forbidden = Complete("sk-other");
  ASSERT_TRUE(forbidden);
  EXPECT_EQ(forbidden->status, 403);
  EXPECT_EQ(ErrorOf(forbidden)["code"], "permission_denied");
  EXPECT_EQ(ErrorOf(forbidden)["type"], "permission_error");
  EXPECT_EQ(ErrorOf(forbidden)["param"], "model");
  httplib::Headers other{{"Authorization", "Bearer sk-other"}};
  httplib::Result models = http_->Get("/v1/models", other);
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  EXPECT_TRUE(Json::parse(models->body)["data"].empty()) << "a key sees only the models it may use";
  EXPECT_EQ(GrpcComplete("").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GrpcComplete("sk-other").error_code(), grpc::StatusCode::PERMISSION_DENIED);

  EXPECT_EQ(worker_->generate_calls(), 0);  // no refusal reached the worker
  EXPECT_THAT(Metrics(), HasSubstr(Refusals("invalid_api_key", 3)));
  EXPECT_THAT(Metrics(), HasSubstr(Refusals("permission_denied", 2)));
  httplib::Result allowed = Complete("sk-a");
  ASSERT_TRUE(allowed);
  EXPECT_EQ(allowed->status, 200) << allowed->body;
  EXPECT_EQ(worker_->last_request().tenant(), "team-a");
}

TEST_F(LimitsTest, RateLimitIsABurstThen429WithRetryAfterPerKey) {
  scheduler::Options options;
  options.rate_limit_rps = 0.001;  // no refill within the test
  options.rate_limit_burst = 2;
  Start(options, "sk-a team-a\nsk-b team-b\nsk-vip team-c rps=0\n");
  for (int i = 0; i < 2; ++i) {
    httplib::Result ok = Complete("sk-a");
    ASSERT_TRUE(ok);
    ASSERT_EQ(ok->status, 200) << i << ": " << ok->body;
  }
  httplib::Result limited = Complete("sk-a");
  ASSERT_TRUE(limited);
  EXPECT_EQ(limited->status, 429);
  EXPECT_EQ(ErrorOf(limited)["code"], "rate_limit_exceeded");
  EXPECT_EQ(ErrorOf(limited)["type"], "requests");
  EXPECT_EQ(limited->get_header_value("Retry-After"), "1000");  // one token at 0.001/s
  const grpc::Status grpc_limited = GrpcComplete("sk-a");
  EXPECT_EQ(grpc_limited.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(grpc_limited.error_message(), HasSubstr("Rate limit reached"));
  EXPECT_EQ(worker_->generate_calls(), 2);

  // Another key has its own bucket; a key whose line says rps=0 has none.
  EXPECT_EQ(Complete("sk-b")->status, 200);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(Complete("sk-vip")->status, 200) << i;
  EXPECT_THAT(Metrics(), HasSubstr(Refusals("rate_limit", 2)));
  EXPECT_THAT(Metrics(), HasSubstr("strata_frontdoor_requests_total{endpoint=\"/v1/completions\",status=\"429\",model_name=\"llama3-tiny\"} 1"));
}

// One stream at a time per key: a second request is refused while the first streams, and the slot comes
// back when the first one's client goes away.
TEST_F(LimitsTest, ConcurrencyLimitCountsStreamsUntilTheirClientLeaves) {
  scheduler::Options options;
  options.max_concurrent_requests_per_key = 1;
  Start(options, "sk-a team-a\nsk-b team-b\n");
  worker_->set_hold_after_tokens(1);  // the stream stays open after its first token
  std::atomic<bool> got_data{false}, leave{false};
  std::jthread streamer([&] {  // joined even when an ASSERT fails: `leave` is set on every path out
    httplib::Client client("127.0.0.1", door_->http_port());
    client.set_read_timeout(30, 0);
    httplib::Request request;
    request.method = "POST";
    request.path = "/v1/completions";
    request.headers = {{"Authorization", "Bearer sk-a"}};
    // Greedy: a sampled first token may have no text of its own (a partial UTF-8 sequence), and then
    // nothing is sent before the worker holds.
    request.body = Json{{"model", kModel}, {"prompt", {5, 6, 7}}, {"max_tokens", 200}, {"ignore_eos", true},
                        {"temperature", 0}, {"stream", true}}.dump();
    request.set_header("Content-Type", "application/json");
    request.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
      got_data = true;
      // Connected until the test has seen the slot taken; then the client goes away.
      while (!leave.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      return false;
    };
    client.send(request);
  });
  struct Leave {
    std::atomic<bool>& leave;
    ~Leave() { leave = true; }
  } leave_on_exit{leave};
  ASSERT_TRUE(WaitFor([&] { return got_data.load(); }, std::chrono::seconds(20)));

  httplib::Result second = Complete("sk-a");
  ASSERT_TRUE(second);
  EXPECT_EQ(second->status, 429);
  EXPECT_EQ(ErrorOf(second)["code"], "rate_limit_exceeded");
  EXPECT_THAT(ErrorOf(second)["message"].get<std::string>(), HasSubstr("Too many concurrent requests"));
  EXPECT_EQ(second->get_header_value("Retry-After"), "1");
  EXPECT_EQ(GrpcComplete("sk-a").error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(Metrics(), HasSubstr(Refusals("concurrency_limit", 2)));
  EXPECT_EQ(worker_->generate_calls(), 1);

  // The client leaves; the worker goes on; the front door's next write fails and the stream ends,
  // releasing the slot.
  leave = true;
  streamer.join();
  worker_->set_hold_after_tokens(-1);
  EXPECT_TRUE(WaitFor([&] { return Metrics().find("strata_frontdoor_open_streams 0") != std::string::npos; },
                      std::chrono::seconds(20)));
  httplib::Result reused = Complete("sk-a");
  ASSERT_TRUE(reused);
  EXPECT_EQ(reused->status, 200) << reused->body;
  // Slots are per key, and the gRPC face's calls hold one too while they run.
  EXPECT_TRUE(GrpcComplete("sk-a").ok());
  EXPECT_EQ(Complete("sk-b")->status, 200);
}

TEST_F(LimitsTest, RequestLimitsRefuseBodiesAndTokensWithClearErrors) {
  scheduler::Options options;
  options.max_request_bytes = 4096;
  options.max_prompt_tokens = 32;
  options.max_completion_tokens = 8;
  Start(options);

  // A declared body over the limit: refused before it is read.
  const std::string big = Json{{"model", kModel}, {"prompt", std::string(5000, 'x')}}.dump();
  httplib::Result declared = Post("/v1/completions", big);
  ASSERT_TRUE(declared);
  EXPECT_EQ(declared->status, 413);
  EXPECT_EQ(ErrorOf(declared)["code"], "request_too_large");
  EXPECT_THAT(ErrorOf(declared)["message"].get<std::string>(), HasSubstr("4096 bytes"));
  // A chunked body (no declared length) is counted as it arrives and refused at the limit: the answer
  // comes while the body has not ended (the client sends 8 KiB and waits).
  for (const std::string path : {"/v1/chat/completions", "/v1/embeddings"}) {
    const std::string response = ChunkedUpload(door_->http_port(), path, 8);
    EXPECT_THAT(response, ::testing::StartsWith("HTTP/1.1 413")) << path;
    EXPECT_THAT(response, HasSubstr("\"code\":\"request_too_large\"")) << path;
    EXPECT_THAT(response, HasSubstr("Connection: close")) << path;
    EXPECT_EQ(response.find("HTTP/1.1", 1), std::string::npos) << "the rest of the body was read as a request: "
                                                                << response;
  }
  EXPECT_THAT(Metrics(), HasSubstr(Refusals("request_too_large", 3)));

  // Tokens: the prompt after tokenization or the chat template; max_tokens.
  httplib::Result long_prompt =
      Post("/v1/completions", Json{{"model", kModel}, {"prompt", std::vector<int>(40, 7)}}.dump());
  ASSERT_TRUE(long_prompt);
  EXPECT_EQ(long_prompt->status, 400);
  EXPECT_THAT(ErrorOf(long_prompt)["message"].get<std::string>(), HasSubstr("has 40 tokens"));
  EXPECT_THAT(ErrorOf(long_prompt)["message"].get<std::string>(), HasSubstr("at most 32"));
  httplib::Result long_chat = Post(
      "/v1/chat/completions",
      Json{{"model", kModel}, {"messages", {{{"role", "user"}, {"content", std::string(300, 'y')}}}}}.dump());
  ASSERT_TRUE(long_chat);
  EXPECT_EQ(long_chat->status, 400);
  EXPECT_EQ(ErrorOf(long_chat)["param"], "messages");
  httplib::Result many = Post("/v1/completions",
                              Json{{"model", kModel}, {"prompt", {5, 6}}, {"max_tokens", 9}}.dump());
  ASSERT_TRUE(many);
  EXPECT_EQ(many->status, 400);
  EXPECT_EQ(ErrorOf(many)["param"], "max_tokens");
  EXPECT_THAT(ErrorOf(many)["message"].get<std::string>(), HasSubstr("at most 8"));
  // Malformed and mistyped bodies: 400s in OpenAI's shape.
  for (const std::string body : {"{\"model\": ", "[]", "{\"model\": \"llama3-tiny\", \"prompt\": [1], \"best_of\": 2}",
                                 "{\"model\": \"llama3-tiny\", \"prompt\": {\"a\": 1}}",
                                 "{\"model\": \"llama3-tiny\", \"prompt\": [1], \"max_tokens\": \"8\"}"}) {
    httplib::Result bad = Post("/v1/completions", body);
    ASSERT_TRUE(bad);
    EXPECT_EQ(bad->status, 400) << body;
    EXPECT_EQ(ErrorOf(bad)["type"], "invalid_request_error") << body;
  }
  proto::CompleteRequest request;  // the gRPC face checks the same token limits
  request.set_model(kModel);
  for (int i = 0; i < 40; ++i) request.mutable_token_ids()->mutable_ids()->Add(7);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto reader = stub_->Complete(&context, request);
  proto::CompletionChunk chunk;
  while (reader->Read(&chunk)) {
  }
  const grpc::Status grpc_long = reader->Finish();
  EXPECT_EQ(grpc_long.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(grpc_long.error_message(), HasSubstr("at most 32"));
  EXPECT_EQ(worker_->generate_calls(), 0);  // none of these reached the worker
  EXPECT_THAT(Metrics(), HasSubstr(Refusals("invalid_request", 9)));

  // Within the limits: an absent max_tokens is capped at 8.
  httplib::Result capped = Post(
      "/v1/chat/completions",
      Json{{"model", kModel}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"ignore_eos", true}}.dump());
  ASSERT_TRUE(capped);
  ASSERT_EQ(capped->status, 200) << capped->body;
  EXPECT_EQ(Json::parse(capped->body)["usage"]["completion_tokens"], 8);
  EXPECT_EQ(worker_->last_request().max_new_tokens(), 8u);
}

}  // namespace
}  // namespace strata::frontdoor
