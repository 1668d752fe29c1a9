// The front door end to end on loopback: a real scheduler (SchedulerServer), a real Worker service over
// the CPU engine on llama3-tiny (engine_worker.h), the front door's HTTP and gRPC faces, and the official
// `openai` npm client and the strata-scheduler binary where they are available.
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "proto/frontdoor.grpc.pb.h"
#include "proto/scheduler.grpc.pb.h"
#include "scheduler/frontdoor/frontdoor.h"
#include "scheduler/service.h"
#include "scheduler/frontdoor/openai_http.h"
#include "tests/scheduler/frontdoor/engine_worker.h"
#include "tests/scheduler/frontdoor/frontdoor_testing.h"
#include "worker/engine/cpu_backend.h"
#include "worker/engine/generate.h"
#include "tests/testing/child_process.h"
#include "tests/testing/loopback.h"
#include "tests/testing/scratch_dir.h"

namespace strata::frontdoor {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;
using strata::testing::ChildProcess;
using strata::testing::WaitFor;
using testing::FieldAfter;
using testing::SseData;

const std::string kModelDir = std::string(STRATA_TEST_DATA_DIR) + "/models/llama3-tiny";
constexpr char kModel[] = "llama3-tiny";

struct Golden {
  std::vector<int32_t> prompt;
  std::vector<int32_t> greedy;
};

Golden LoadGolden() {
  std::ifstream file(kModelDir + "/golden.json");
  const Json json = Json::parse(file);
  return {json["prompt_ids"].get<std::vector<int32_t>>(), json["cpu"]["greedy_ids"].get<std::vector<int32_t>>()};
}


class FrontDoorTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(""); }

  // `tweak` adjusts the front door's options (tenancy, usage, /metrics) before it starts.
  void Start(const std::string& api_keys_file, const std::function<void(scheduler::Options&)>& tweak = nullptr) {
    door_.reset();
    server_.reset();
    scheduler::Options options = testing::LoopbackSchedulerOptions();
    absl::StatusOr<std::unique_ptr<scheduler::SchedulerServer>> server = scheduler::SchedulerServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    if (worker_ == nullptr) {
      absl::StatusOr<std::unique_ptr<testing::EngineWorker>> worker = testing::EngineWorker::Start(kModelDir, kModel);
      ASSERT_TRUE(worker.ok()) << worker.status();
      worker_ = *std::move(worker);
    }
    absl::StatusOr<scheduler::RegisterResult> registered =
        server_->scheduler().Register(worker_->MakeRegistration("worker-0"));
    ASSERT_TRUE(registered.ok()) << registered.status();
    epoch_ = registered->epoch;
    options.model_dir = kModelDir;
    options.http_host = "127.0.0.1";
    options.http_port = 0;
    options.frontdoor_grpc_address = "127.0.0.1:0";
    options.api_keys_file = api_keys_file;
    options.request_timeout = absl::Seconds(30);
    if (tweak != nullptr) tweak(options);
    absl::StatusOr<std::unique_ptr<FrontDoor>> door = FrontDoor::Start(options, &server_->scheduler());
    ASSERT_TRUE(door.ok()) << door.status();
    door_ = *std::move(door);
    http_ = std::make_unique<httplib::Client>("127.0.0.1", door_->http_port());
    http_->set_read_timeout(30, 0);
  }

  httplib::Result Post(const std::string& path, const Json& body, const std::string& key = "") {
    httplib::Headers headers;
    if (!key.empty()) headers.emplace("Authorization", "Bearer " + key);
    return http_->Post(path.c_str(), headers, body.dump(), "application/json");
  }

  Json Completion(const std::vector<int32_t>& prompt, int max_tokens) {
    return Json{{"model", kModel}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0},
                {"ignore_eos", true}};
  }

  Golden golden_ = LoadGolden();
  std::unique_ptr<testing::EngineWorker> worker_;
  std::unique_ptr<scheduler::SchedulerServer> server_;
  uint64_t epoch_ = 0;
  std::unique_ptr<FrontDoor> door_;
  std::unique_ptr<httplib::Client> http_;
};

TEST_F(FrontDoorTest, CompletionReturnsTheEnginesGreedyTokensWithUsage) {
  httplib::Result result = Post("/v1/completions", Completion(golden_.prompt, 8));
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const Json body = Json::parse(result->body);
  const std::string expected = door_->model().tokenizer().Decode(
      absl::MakeConstSpan(golden_.greedy).subspan(0, 8), model::SpecialTokens::kSkip);
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["model"], kModel);
  EXPECT_EQ(body["choices"][0]["text"], expected);
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["usage"]["prompt_tokens"], golden_.prompt.size());
  EXPECT_EQ(body["usage"]["completion_tokens"], 8);
  EXPECT_EQ(body["usage"]["total_tokens"], golden_.prompt.size() + 8);
  EXPECT_EQ(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  EXPECT_EQ(body["usage"]["strata"]["worker_id"], "worker-0");
  EXPECT_EQ(body["usage"]["strata"]["prefill_tokens"], golden_.prompt.size());
  EXPECT_GT(body["usage"]["strata"]["ttft_s"].get<double>(), 0);
  const proto::GenerateRequest sent = worker_->last_request();
  EXPECT_EQ(sent.tenant(), "client:9:127.0.0.1|user:0:");  // no API keys: the client (address, no user) is the tenant
  EXPECT_EQ(sent.request_id(), body["id"]);
  EXPECT_EQ(sent.max_new_tokens(), 8u);
  EXPECT_TRUE(sent.ignore_eos());
  EXPECT_FALSE(sent.disable_prefix_cache());

  Json uncached = Completion(golden_.prompt, 1);
  uncached["disable_prefix_cache"] = true;
  uncached["cache_salt"] = "s";
  ASSERT_EQ(Post("/v1/completions", uncached)->status, 200);
  EXPECT_TRUE(worker_->last_request().disable_prefix_cache());
  EXPECT_EQ(worker_->last_request().cache_salt(), "s");
}

TEST_F(FrontDoorTest, StreamingCompletionIsServerSentEventsEndingWithDone) {
  Json request = Completion(golden_.prompt, 12);
  request["stream"] = true;
  request["stream_options"] = {{"include_usage", true}};
  httplib::Result result = Post("/v1/completions", request);
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  EXPECT_EQ(result->get_header_value("Content-Type"), "text/event-stream");
  const std::vector<std::string> events = SseData(result->body);
  ASSERT_GE(events.size(), 4u) << result->body;
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  std::string finish_reason;
  Json usage;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const Json chunk = Json::parse(events[i]);
    EXPECT_EQ(chunk["object"], "text_completion");
    if (chunk["choices"].empty()) {
      usage = chunk["usage"];
      continue;
    }
    EXPECT_TRUE(chunk.contains("usage") && chunk["usage"].is_null());
    text += chunk["choices"][0]["text"].get<std::string>();
    if (!chunk["choices"][0]["finish_reason"].is_null()) finish_reason = chunk["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, door_->model().tokenizer().Decode(absl::MakeConstSpan(golden_.greedy).subspan(0, 12),
                                                    model::SpecialTokens::kSkip));
  EXPECT_EQ(finish_reason, "length");
  EXPECT_EQ(usage["completion_tokens"], 12);
  EXPECT_EQ(usage["strata"]["worker_id"], "worker-0");
}

TEST_F(FrontDoorTest, StopStringEndsTheTextBeforeIt) {
  const std::string full = door_->model().tokenizer().Decode(absl::MakeConstSpan(golden_.greedy).subspan(0, 16),
                                                             model::SpecialTokens::kSkip);
  ASSERT_GT(full.size(), 12u);
  const std::string stop = full.substr(full.size() / 2, 3);
  const std::string before = full.substr(0, full.find(stop));
  for (bool stream : {false, true}) {
    Json request = Completion(golden_.prompt, 16);
    request["stop"] = {stop};
    request["stream"] = stream;
    httplib::Result result = Post("/v1/completions", request);
    ASSERT_TRUE(result);
    ASSERT_EQ(result->status, 200) << result->body;
    std::string text, finish_reason;
    if (stream) {
      for (const std::string& event : SseData(result->body)) {
        if (event == "[DONE]") continue;
        const Json chunk = Json::parse(event);
        text += chunk["choices"][0]["text"].get<std::string>();
        if (!chunk["choices"][0]["finish_reason"].is_null()) finish_reason = chunk["choices"][0]["finish_reason"];
      }
    } else {
      const Json body = Json::parse(result->body);
      text = body["choices"][0]["text"];
      finish_reason = body["choices"][0]["finish_reason"];
    }
    EXPECT_EQ(text, before) << "stream=" << stream << " stop='" << stop << "'";
    EXPECT_EQ(finish_reason, "stop");
  }
}

TEST_F(FrontDoorTest, ChatStreamsRoleFirstThenContent) {
  Json request = {{"model", kModel},
                  {"messages", {{{"role", "user"}, {"content", "Say something."}}}},
                  {"max_tokens", 6},
                  {"temperature", 0},
                  {"ignore_eos", true},
                  {"stream", true}};
  httplib::Result result = Post("/v1/chat/completions", request);
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const std::vector<std::string> events = SseData(result->body);
  ASSERT_GE(events.size(), 3u);
  const Json first = Json::parse(events[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  const Json last = Json::parse(events[events.size() - 2]);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(events.back(), "[DONE]");

  request["stream"] = false;
  httplib::Result whole = Post("/v1/chat/completions", request);
  ASSERT_TRUE(whole);
  ASSERT_EQ(whole->status, 200) << whole->body;
  const Json body = Json::parse(whole->body);
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["usage"]["completion_tokens"], 6);
  // The fallback template's prompt, tokenized without a second BOS.
  const std::vector<int32_t> ids =
      *door_->model().tokenizer().Encode("<|begin_of_text|>user: Say something.\nassistant:", model::SpecialTokens::kSkip);
  EXPECT_EQ(body["usage"]["prompt_tokens"], ids.size());
}

TEST_F(FrontDoorTest, BadRequestsGetOpenAiErrors) {
  httplib::Result malformed = http_->Post("/v1/completions", "{\"model\": ", "application/json");
  ASSERT_TRUE(malformed);
  EXPECT_EQ(malformed->status, 400);
  EXPECT_EQ(Json::parse(malformed->body)["error"]["type"], "invalid_request_error");

  Json unknown = Completion({1, 2, 3}, 4);
  unknown["model"] = "gpt-4o";
  httplib::Result not_found = Post("/v1/completions", unknown);
  ASSERT_TRUE(not_found);
  EXPECT_EQ(not_found->status, 404);
  EXPECT_EQ(Json::parse(not_found->body)["error"]["code"], "model_not_found");

  httplib::Result too_long = Post("/v1/completions", Completion(std::vector<int32_t>(8190, 7), 16));
  ASSERT_TRUE(too_long);
  EXPECT_EQ(too_long->status, 400);
  EXPECT_EQ(Json::parse(too_long->body)["error"]["code"], "context_length_exceeded");

  httplib::Result chat_too_long =
      Post("/v1/chat/completions", {{"model", kModel},
                                    {"messages", {{{"role", "user"}, {"content", std::string(9000, 'x')}}}}});
  ASSERT_TRUE(chat_too_long);
  EXPECT_EQ(chat_too_long->status, 400);
  EXPECT_EQ(Json::parse(chat_too_long->body)["error"]["code"], "context_length_exceeded");

  httplib::Result models = http_->Get("/v1/models");
  ASSERT_TRUE(models);
  ASSERT_EQ(models->status, 200);
  const Json list = Json::parse(models->body);
  EXPECT_EQ(list["object"], "list");
  EXPECT_EQ(list["data"][0]["id"], kModel);
  EXPECT_EQ(list["data"][0]["workers"], 1);
  httplib::Result unknown_url = http_->Post("/v1/embeddings", "{}", "application/json");
  ASSERT_TRUE(unknown_url);
  EXPECT_EQ(unknown_url->status, 404);
  EXPECT_EQ(Json::parse(unknown_url->body)["error"]["code"], "unknown_url");
  httplib::Result odd_url = http_->Post("/v1/%FF%FE", "{}", "application/json");  // not UTF-8 once decoded
  ASSERT_TRUE(odd_url);
  EXPECT_EQ(odd_url->status, 404);
  EXPECT_FALSE(Json::parse(odd_url->body, nullptr, false).is_discarded()) << odd_url->body;
  httplib::Result health = http_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(Json::parse(health->body)["workers"], 1);
  // Asked for JSON, a client must not get free text with a 200.
  Json json_mode = Completion({1, 2, 3}, 4);
  json_mode["response_format"] = {{"type", "json_object"}};
  httplib::Result json_refused = Post("/v1/completions", json_mode);
  ASSERT_TRUE(json_refused);
  EXPECT_EQ(json_refused->status, 400);
  EXPECT_EQ(Json::parse(json_refused->body)["error"]["param"], "response_format");
  EXPECT_EQ(worker_->generate_calls(), 0);  // none of these reached the worker
}

TEST_F(FrontDoorTest, NoLiveWorkerIs503) {
  ASSERT_TRUE(server_->scheduler().Deregister("worker-0", epoch_).ok());
  httplib::Result result = Post("/v1/completions", Completion({5, 6, 7}, 4));
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 503);
  const Json error = Json::parse(result->body)["error"];
  EXPECT_EQ(error["type"], "service_unavailable_error");
  EXPECT_THAT(error["message"].get<std::string>(), HasSubstr("no live worker serves model 'llama3-tiny'"));
  EXPECT_THAT(error["message"].get<std::string>(), HasSubstr("live workers serve: nothing"));
  // /health says why it cannot serve; /healthz (the process answers) stays 200.
  httplib::Result health = http_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
  EXPECT_THAT(Json::parse(health->body)["reason"].get<std::string>(), HasSubstr("no live worker serves model"));
  EXPECT_EQ(http_->Get("/healthz")->status, 200);
}

// Greedy with every penalty and min_p: the fields reach the worker, and its tokens are the engine's own
// under the same options (engine::Generate in this process), which differ from plain greedy (the golden
// greedy output repeats tokens 64 and 271). The stop token ends the choice with "stop", its text left out.
TEST_F(FrontDoorTest, PenaltiesAndMinPReachTheWorkerAndShapeItsTokens) {
  Json request = Completion(golden_.prompt, 16);
  request["repetition_penalty"] = 1.8;
  request["presence_penalty"] = 1.0;
  request["frequency_penalty"] = 0.5;
  request["min_p"] = 0.1;
  httplib::Result result = Post("/v1/completions", request);
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const proto::SamplingParams sent = worker_->last_request().sampling();
  EXPECT_FLOAT_EQ(sent.repetition_penalty(), 1.8f);
  EXPECT_FLOAT_EQ(sent.presence_penalty(), 1.0f);
  EXPECT_FLOAT_EQ(sent.frequency_penalty(), 0.5f);
  EXPECT_FLOAT_EQ(sent.min_p(), 0.1f);

  absl::StatusOr<std::unique_ptr<engine::Engine>> engine =
      engine::Engine::Create(worker_->model(), engine::CreateCpuBackend());
  ASSERT_TRUE(engine.ok()) << engine.status();
  engine::GenerateOptions options;
  options.max_new_tokens = 16;
  options.sampling = {.repetition_penalty = 1.8f, .frequency_penalty = 0.5f, .presence_penalty = 1.0f};
  absl::StatusOr<engine::GenerateResult> reference = engine::Generate(**engine, golden_.prompt, options);
  ASSERT_TRUE(reference.ok()) << reference.status();
  const Json body = Json::parse(result->body);
  const model::Tokenizer& tokenizer = door_->model().tokenizer();
  EXPECT_EQ(body["choices"][0]["text"], tokenizer.Decode(reference->output_ids, model::SpecialTokens::kSkip));
  EXPECT_NE(reference->output_ids, std::vector<int32_t>(golden_.greedy.begin(), golden_.greedy.begin() + 16));
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["system_fingerprint"], SystemFingerprint(worker_->model().fingerprint.digest));

  // A stop token: "stop", and the text ends before it.
  Json stopped = Completion(golden_.prompt, 16);
  stopped["stop_token_ids"] = {golden_.greedy[3]};
  httplib::Result stop = Post("/v1/completions", stopped);
  ASSERT_TRUE(stop);
  ASSERT_EQ(stop->status, 200) << stop->body;
  const Json stop_body = Json::parse(stop->body);
  EXPECT_EQ(stop_body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(stop_body["usage"]["completion_tokens"], 4);
  EXPECT_EQ(stop_body["choices"][0]["text"],
            tokenizer.Decode(absl::MakeConstSpan(golden_.greedy).subspan(0, 3), model::SpecialTokens::kSkip));
}

// vLLM's /tokenize, /detokenize and /version; the first two behind the API key like every /v1 route.
TEST_F(FrontDoorTest, TokenizeDetokenizeAndVersion) {
  strata::testing::ScratchDir dir = strata::testing::MakeTempDir("frontdoor_tokenize_keys");
  std::ofstream(dir.path() / "keys") << "sk-a team-a models=" << kModel << "\nsk-other team-b models=else\n";
  Start((dir.path() / "keys").string());
  const Json tokenize = {{"model", kModel}, {"prompt", "Hello world"}};
  EXPECT_EQ(Post("/tokenize", tokenize)->status, 401);
  EXPECT_EQ(Post("/tokenize", tokenize, "sk-other")->status, 403);
  httplib::Result tokens = Post("/tokenize", tokenize, "sk-a");
  ASSERT_TRUE(tokens);
  ASSERT_EQ(tokens->status, 200) << tokens->body;
  const Json t = Json::parse(tokens->body);
  const std::vector<int32_t> expected =
      *door_->model().tokenizer().Encode("Hello world", model::SpecialTokens::kInclude);
  EXPECT_EQ(t["tokens"].get<std::vector<int32_t>>(), expected);
  EXPECT_EQ(t["count"], expected.size());
  EXPECT_EQ(t["max_model_len"], door_->model().context_tokens());
  // A chat: the template's tokens, as /v1/chat/completions would send them.
  httplib::Result chat = Post("/tokenize", {{"model", kModel}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}}, "sk-a");
  ASSERT_TRUE(chat);
  ASSERT_EQ(chat->status, 200) << chat->body;
  EXPECT_GT(Json::parse(chat->body)["count"].get<int>(), 1);

  httplib::Result text = Post("/detokenize", {{"model", kModel}, {"tokens", expected}}, "sk-a");
  ASSERT_TRUE(text);
  ASSERT_EQ(text->status, 200) << text->body;
  EXPECT_EQ(Json::parse(text->body)["prompt"], door_->model().tokenizer().Decode(expected));
  EXPECT_EQ(Post("/detokenize", {{"model", kModel}, {"tokens", expected}})->status, 401);
  httplib::Result outside = Post("/detokenize", {{"model", kModel}, {"tokens", {1 << 30}}}, "sk-a");
  ASSERT_TRUE(outside);
  EXPECT_EQ(outside->status, 400);
  EXPECT_EQ(Json::parse(outside->body)["error"]["param"], "tokens");
  httplib::Result unknown = Post("/tokenize", {{"model", "nope"}, {"prompt", "x"}}, "sk-a");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->status, 403);  // the key may not use it (a keyless caller would get 404)

  httplib::Result version = http_->Get("/version");
  ASSERT_TRUE(version);
  ASSERT_EQ(version->status, 200);
  EXPECT_EQ(Json::parse(version->body)["version"], std::string(StrataVersion()));
  EXPECT_EQ(worker_->generate_calls(), 0);
}

TEST_F(FrontDoorTest, WorkerDyingMidStreamEndsTheStreamWithAnErrorEvent) {
  worker_->set_hold_after_tokens(2);
  Json request = Completion(golden_.prompt, 16);
  request["stream"] = true;
  std::thread killer([&] {
    EXPECT_TRUE(WaitFor([&] { return worker_->generate_calls() > 0; }, std::chrono::seconds(20)));
    // The stream is open and held after its second token: the worker dies now.
    EXPECT_TRUE(WaitFor([&] { return door_->metrics().RenderText().find("strata_frontdoor_open_streams 1") !=
                                     std::string::npos; },
                        std::chrono::seconds(20)));
    worker_->Kill();
  });
  httplib::Result result = Post("/v1/completions", request);
  killer.join();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  const std::vector<std::string> events = SseData(result->body);
  ASSERT_GE(events.size(), 2u) << result->body;
  EXPECT_EQ(events.back(), "[DONE]");
  const Json error = Json::parse(events[events.size() - 2]);
  ASSERT_TRUE(error.contains("error")) << result->body;
  EXPECT_THAT(error["error"]["message"].get<std::string>(), HasSubstr("worker worker-0"));
  // Before it, the choice ends with finish_reason "abort" (neither stop nor length).
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(Json::parse(events[events.size() - 3])["choices"][0]["finish_reason"], "abort") << result->body;
  // The worker sent two tokens; the second may still be in flight when it dies.
  EXPECT_THAT(error["error"]["message"].get<std::string>(),
              ::testing::ContainsRegex("failed mid-stream after (1 token|2 tokens): "));
  EXPECT_THAT(door_->metrics().RenderText(), HasSubstr("strata_frontdoor_stream_failures_total 1"));

  // The worker is gone: a new request cannot reach it.
  httplib::Result after = Post("/v1/completions", Completion({5, 6, 7}, 4));
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 503) << after->body;
  worker_.reset();  // the next test starts a fresh one
}

TEST_F(FrontDoorTest, AnUnreachableWorkerWithinItsLeaseIsRetriedElsewhere) {
  absl::StatusOr<std::unique_ptr<testing::EngineWorker>> second = testing::EngineWorker::Start(kModelDir, kModel);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(server_->scheduler().Register((*second)->MakeRegistration("worker-1")).ok());
  ASSERT_EQ(Post("/v1/completions", Completion({5, 6, 7}, 1))->status, 200);  // both known to the front door
  ASSERT_EQ(Post("/v1/completions", Completion({5, 6, 8}, 1))->status, 200);
  worker_->Kill();  // still registered: its lease has not lapsed
  for (int i = 0; i < 6; ++i) {
    httplib::Result result = Post("/v1/completions", Completion({5, 6, 7, 8, i}, 2));
    ASSERT_TRUE(result);
    ASSERT_EQ(result->status, 200) << result->body;
    EXPECT_EQ(Json::parse(result->body)["usage"]["strata"]["worker_id"], "worker-1");
  }
  worker_.reset();
}

TEST_F(FrontDoorTest, NonStreamingRequestOfADyingWorkerIs502) {
  worker_->set_hold_after_tokens(1);
  std::thread killer([&] {
    EXPECT_TRUE(WaitFor([&] { return door_->metrics().RenderText().find("strata_frontdoor_open_streams 1") !=
                                     std::string::npos; },
                        std::chrono::seconds(20)));
    worker_->Kill();
  });
  httplib::Result result = Post("/v1/completions", Completion(golden_.prompt, 16));
  killer.join();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 502) << result->body;
  EXPECT_THAT(Json::parse(result->body)["error"]["message"].get<std::string>(), HasSubstr("failed mid-stream"));
  worker_.reset();
}

TEST_F(FrontDoorTest, TheTenantComesFromTheApiKeyAndSteersRouting) {
  strata::testing::ScratchDir dir = strata::testing::MakeTempDir("frontdoor_keys");
  std::ofstream(dir.path() / "keys") << "sk-a team-a\nsk-b team-b\n";
  Start((dir.path() / "keys").string());
  // A second worker of the same model holds team-a's KV for the prompt (keys as the scheduler computes them).
  absl::StatusOr<std::unique_ptr<testing::EngineWorker>> second = testing::EngineWorker::Start(kModelDir, kModel);
  ASSERT_TRUE(second.ok()) << second.status();
  absl::StatusOr<scheduler::RegisterResult> registered =
      server_->scheduler().Register((*second)->MakeRegistration("worker-1"));
  ASSERT_TRUE(registered.ok()) << registered.status();
  BlockKeyContext context;
  context.model_fingerprint = worker_->model().fingerprint.digest;
  context.block_tokens = 16;
  context.kv_dtype = DType::kF32;
  context.tenant_salt = TenantSalt("team-a");
  scheduler::Inventory inventory;
  inventory.tiers.emplace_back(scheduler::Tier::kGpu, ComputeBlockKeys(context, golden_.prompt));
  ASSERT_TRUE(server_->scheduler().ApplyEvents("worker-1", registered->epoch, &inventory, {}).ok());

  Json request = Completion(golden_.prompt, 2);
  request["tenant"] = "team-b";  // a client's own claim is ignored
  httplib::Result none = Post("/v1/completions", request);
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(Json::parse(none->body)["error"]["code"], "invalid_api_key");
  httplib::Result wrong = Post("/v1/completions", request, "sk-nope");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  for (int i = 0; i < 3; ++i) {
    httplib::Result a = Post("/v1/completions", request, "sk-a");
    ASSERT_TRUE(a);
    ASSERT_EQ(a->status, 200) << a->body;
    EXPECT_EQ(Json::parse(a->body)["usage"]["strata"]["worker_id"], "worker-1");
  }
  // Team b shares nothing with team a: the cached prefix does not attract its requests, so they spread
  // (by queue: each routed request makes its worker look busier; 8 outweigh team a's 3 on worker-1).
  std::set<std::string> b_workers;
  for (int i = 0; i < 8; ++i) {
    httplib::Result b = Post("/v1/completions", request, "sk-b");
    ASSERT_TRUE(b);
    ASSERT_EQ(b->status, 200) << b->body;
    b_workers.insert(Json::parse(b->body)["usage"]["strata"]["worker_id"].get<std::string>());
  }
  EXPECT_EQ(b_workers.size(), 2u);
  // A cache_salt narrows team a's sharing: the salted keys are not the cached ones either.
  request["cache_salt"] = "private";
  std::set<std::string> salted_workers;
  for (int i = 0; i < 8; ++i) {
    httplib::Result salted = Post("/v1/completions", request, "sk-a");
    ASSERT_TRUE(salted);
    salted_workers.insert(Json::parse(salted->body)["usage"]["strata"]["worker_id"].get<std::string>());
  }
  EXPECT_EQ(salted_workers.size(), 2u);
  // Whichever worker ran it was told the key's tenant, not the client's claim.
  for (testing::EngineWorker* w : {worker_.get(), second->get()}) {
    if (w->generate_calls() == 0) continue;
    EXPECT_NE(w->last_request().tenant(), "team-b");
  }
  EXPECT_TRUE((*second)->last_request().tenant() == "team-a" || worker_->last_request().tenant() == "team-a");
}

// Without API keys each client address, narrowed by the request's `user`, is its own tenant: its KV is
// shared with no other caller (the timing side channel of a shared cache) unless --shared-prefix-cache.
TEST_F(FrontDoorTest, KeylessCallersAreTenantsOfTheirOwnUnlessThePrefixCacheIsShared) {
  auto tenant_of = [&](const Json& request) {
    httplib::Result result = Post("/v1/completions", request);
    EXPECT_TRUE(result && result->status == 200) << (result ? result->body : "no answer");
    return worker_->last_request().tenant();
  };
  Json request = Completion({5, 6, 7}, 1);
  const std::string anonymous = tenant_of(request);
  EXPECT_EQ(anonymous, "client:9:127.0.0.1|user:0:");
  request["user"] = "alice";
  const std::string alice = tenant_of(request);
  EXPECT_EQ(alice, "client:9:127.0.0.1|user:5:alice");
  request["user"] = "bob";
  EXPECT_NE(tenant_of(request), alice);
  request["user"] = 5;
  httplib::Result mistyped = Post("/v1/completions", request);
  ASSERT_TRUE(mistyped);
  EXPECT_EQ(mistyped->status, 400);
  EXPECT_EQ(Json::parse(mistyped->body)["error"]["param"], "user");
  // The gRPC face: the peer's address, without its port.
  Start("", [](scheduler::Options& options) { options.frontdoor_grpc_address = "127.0.0.1:0"; });
  auto stub = proto::FrontDoor::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(door_->grpc_port()), grpc::InsecureChannelCredentials()));
  proto::CompleteRequest grpc_request;
  grpc_request.set_model(kModel);
  grpc_request.mutable_token_ids()->add_ids(5);
  grpc_request.mutable_options()->set_max_tokens(1);
  grpc::ClientContext context;
  auto reader = stub->Complete(&context, grpc_request);
  for (proto::CompletionChunk chunk; reader->Read(&chunk);) {
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(worker_->last_request().tenant(), "client:9:127.0.0.1|user:0:");
  // Shared: every keyless caller is tenant "default", as with one API key.
  Start("", [](scheduler::Options& options) { options.prefix_cache_sharing = scheduler::PrefixCacheSharing::kShared; });
  request["user"] = "alice";
  EXPECT_EQ(tenant_of(request), "default");
}

TEST_F(FrontDoorTest, CachedTokenCountsCanBeLeftOutOfResponses) {
  httplib::Result shown = Post("/v1/completions", Completion({5, 6, 7}, 1));
  ASSERT_TRUE(shown);
  Json usage = Json::parse(shown->body)["usage"];
  EXPECT_TRUE(usage.contains("prompt_tokens_details"));
  EXPECT_TRUE(usage["strata"].contains("cached_tokens_kvstore"));
  Start("", [](scheduler::Options& options) { options.cache_report = scheduler::CacheReport::kHidden; });
  httplib::Result hidden = Post("/v1/completions", Completion({5, 6, 7}, 1));
  ASSERT_TRUE(hidden);
  usage = Json::parse(hidden->body)["usage"];
  EXPECT_EQ(usage["prompt_tokens"], 3);
  EXPECT_FALSE(usage.contains("prompt_tokens_details")) << usage.dump();
  for (const char* field : {"cached_tokens_gpu", "cached_tokens_host", "cached_tokens_kvstore", "prefill_tokens"}) {
    EXPECT_FALSE(usage["strata"].contains(field)) << field;
  }
}

TEST_F(FrontDoorTest, AGrpcCallersDeadlineEndsTheWorkersCall) {
  // The worker holds its stream after the first token until its call is cancelled: only the caller's
  // deadline, carried over to the worker's call, ends it before the front door's 30 s request timeout.
  worker_->set_hold_after_tokens(1);
  auto stub = proto::FrontDoor::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(door_->grpc_port()),
                                                            grpc::InsecureChannelCredentials()));
  proto::CompleteRequest request;
  request.set_model(kModel);
  request.mutable_token_ids()->mutable_ids()->Assign(golden_.prompt.begin(), golden_.prompt.end());
  request.mutable_options()->set_max_tokens(16);
  request.mutable_options()->set_temperature(0);
  request.mutable_options()->set_ignore_eos(true);
  const auto start = std::chrono::steady_clock::now();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  auto reader = stub->Complete(&context, request);
  proto::CompletionChunk chunk;
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The front door's handler returns once the worker's call has ended: no stream stays open.
  EXPECT_TRUE(WaitFor([&] { return door_->metrics().RenderText().find("strata_frontdoor_open_streams 0") !=
                                   std::string::npos; },
                      std::chrono::seconds(10)));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(15));
}

TEST_F(FrontDoorTest, GrpcFrontDoorStreamsTheSameTokens) {
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(door_->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = proto::FrontDoor::NewStub(channel);
  proto::CompleteRequest request;
  request.set_model(kModel);
  request.mutable_token_ids()->mutable_ids()->Assign(golden_.prompt.begin(), golden_.prompt.end());
  request.mutable_options()->set_max_tokens(8);
  request.mutable_options()->set_temperature(0);
  request.mutable_options()->set_ignore_eos(true);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto reader = stub->Complete(&context, request);
  proto::CompletionChunk chunk;
  std::string text;
  std::vector<int32_t> ids;
  proto::CompletionChunk last;
  while (reader->Read(&chunk)) {
    text += chunk.text();
    ids.insert(ids.end(), chunk.token_ids().begin(), chunk.token_ids().end());
    last = chunk;
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(ids, std::vector<int32_t>(golden_.greedy.begin(), golden_.greedy.begin() + 8));
  EXPECT_EQ(text, door_->model().tokenizer().Decode(ids, model::SpecialTokens::kSkip));
  EXPECT_TRUE(last.finished());
  EXPECT_EQ(last.finish_reason(), "length");
  EXPECT_EQ(last.usage().completion_tokens(), 8u);
  EXPECT_EQ(last.usage().strata().worker_id(), "worker-0");

  grpc::ClientContext models_context;
  models_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  proto::ListModelsResponse models;
  ASSERT_TRUE(stub->ListModels(&models_context, proto::ListModelsRequest(), &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).id(), kModel);
  EXPECT_EQ(models.models(0).max_context_tokens(), 8192u);

  request.set_model("nope");
  grpc::ClientContext bad_context;
  bad_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto bad = stub->Complete(&bad_context, request);
  while (bad->Read(&chunk)) {
  }
  const grpc::Status status = bad->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("does not exist"));
}

TEST_F(FrontDoorTest, MetricsCountRequestsAndTimeToFirstToken) {
  // The public port serves /metrics only when asked to (the scheduler's metrics port always does).
  httplib::Result off = http_->Get("/metrics");
  ASSERT_TRUE(off);
  EXPECT_EQ(off->status, 404);
  Start("", [](scheduler::Options& options) { options.http_metrics = scheduler::HttpMetrics::kOn; });
  ASSERT_TRUE(Post("/v1/completions", Completion({5, 6, 7}, 2)));
  ASSERT_TRUE(http_->Post("/v1/completions", "nope", "application/json"));
  httplib::Result metrics = http_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_THAT(metrics->body, HasSubstr("strata_frontdoor_requests_total{endpoint=\"/v1/completions\",status=\"200\",model_name=\"llama3-tiny\"} 1"));
  EXPECT_THAT(metrics->body, HasSubstr("strata_frontdoor_requests_total{endpoint=\"/v1/completions\",status=\"400\",model_name=\"llama3-tiny\"} 1"));
  EXPECT_THAT(metrics->body, HasSubstr("strata_frontdoor_ttft_seconds_count{model_name=\"llama3-tiny\"} 1"));
  EXPECT_THAT(metrics->body, HasSubstr("strata_frontdoor_e2e_request_seconds_count{model_name=\"llama3-tiny\"} 1"));
  // Buckets reach an hour: a million-token prefill takes minutes.
  EXPECT_THAT(metrics->body, HasSubstr("strata_frontdoor_ttft_seconds_bucket{model_name=\"llama3-tiny\",le=\"3600\"} 1"));
}

// The official `openai` npm package against the HTTP front door (skips when node or the package is
// missing: deploy/install-deps.sh installs it).
TEST_F(FrontDoorTest, OfficialOpenAiNodeClient) {
  std::string node;
  for (const char* candidate : {"/usr/bin/node", "/usr/local/bin/node"}) {
    if (std::filesystem::exists(candidate)) node = candidate;
  }
  if (node.empty()) GTEST_SKIP() << "node is not installed (deploy/install-deps.sh needs node 20 + npm)";
  const std::filesystem::path package = std::filesystem::path(STRATA_SOURCE_DIR) / "deploy/node/node_modules/openai";
  if (!std::filesystem::exists(package / "package.json")) {
    GTEST_SKIP() << package.string() << " is missing: run deploy/install-deps.sh (npm install of the openai package)";
  }
  ChildProcess client({node, std::string(STRATA_SOURCE_DIR) + "/tests/scheduler/openai_client/client_test.mjs",
                       "http://127.0.0.1:" + std::to_string(door_->http_port()) + "/v1", kModel});
  const std::optional<int> code = client.Wait(std::chrono::seconds(40));
  ASSERT_TRUE(code.has_value()) << "the node client did not finish: " << client.err();
  EXPECT_EQ(*code, 0) << client.out() << client.err();
  EXPECT_THAT(client.out(), HasSubstr("openai-node: all checks passed"));
}

using strata::testing::FreePort;

// strata-scheduler serve with the front-door flags the local cluster uses; a worker registers over gRPC.
TEST(FrontDoorProcess, ServeWithModelDirAnswersOpenAiRequests) {
  absl::StatusOr<std::unique_ptr<testing::EngineWorker>> worker = testing::EngineWorker::Start(kModelDir, "tiny");
  ASSERT_TRUE(worker.ok()) << worker.status();
  const int http_port = FreePort();
  ChildProcess child({STRATA_SCHEDULER_PATH, "serve", "--grpc-address", "127.0.0.1:0", "--metrics-host", "127.0.0.1",
                      "--metrics-port", "0", "--http-port", std::to_string(http_port), "--http-host", "127.0.0.1",
                      "--model-dir", kModelDir, "--served-model-name", "tiny", "--policy", "cache-aware",
                      "--lease-ms", "60000", "--heartbeat-ms", "10000"});
  const std::string log = child.ReadStderrUntil("event=frontdoor_started", std::chrono::seconds(20));
  ASSERT_NE(log.find("event=frontdoor_started model=tiny"), std::string::npos) << log;
  const int grpc_port = FieldAfter(log, "grpc_port=");
  ASSERT_GT(grpc_port, 0) << log;

  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_port), grpc::InsecureChannelCredentials());
  auto stub = proto::Scheduler::NewStub(channel);
  const scheduler::Registration r = (*worker)->MakeRegistration("worker-p");
  proto::RegisterRequest request;
  request.set_holder_id(r.holder_id);
  request.set_kind(proto::HOLDER_KIND_WORKER);
  request.mutable_key_scheme()->set_version(r.scheme_version);
  request.mutable_key_scheme()->set_block_tokens(r.key_context.block_tokens);
  request.mutable_key_scheme()->set_model_fingerprint(
      std::string(r.key_context.model_fingerprint.begin(), r.key_context.model_fingerprint.end()));
  request.mutable_key_scheme()->set_kv_dtype(std::string(DTypeName(r.key_context.kv_dtype)));
  request.set_address(r.address);
  request.mutable_worker()->set_gpu_kv_blocks(r.worker.gpu_kv_blocks);
  request.mutable_worker()->set_host_kv_blocks(r.worker.host_kv_blocks);
  request.mutable_worker()->set_block_bytes(r.worker.block_bytes);
  request.mutable_worker()->set_prefill_linear_s_per_token(r.worker.prefill_linear_s_per_token);
  request.mutable_worker()->set_host_to_gpu_bytes_per_s(r.worker.host_to_gpu_bytes_per_s);
  request.mutable_worker()->set_network_bytes_per_s(r.worker.network_bytes_per_s);
  request.mutable_worker()->set_decode_tokens_per_s(r.worker.decode_tokens_per_s);
  request.mutable_worker()->set_model_name("tiny");
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  proto::RegisterResponse response;
  const grpc::Status registered = stub->Register(&context, request, &response);
  ASSERT_TRUE(registered.ok()) << registered.error_message();

  httplib::Client http("127.0.0.1", http_port);
  http.set_read_timeout(30, 0);
  const Json body = {{"model", "tiny"}, {"prompt", {5, 6, 7, 8}}, {"max_tokens", 3}, {"ignore_eos", true}};
  httplib::Result result = http.Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const Json answer = Json::parse(result->body);
  EXPECT_EQ(answer["usage"]["completion_tokens"], 3);
  EXPECT_EQ(answer["usage"]["strata"]["worker_id"], "worker-p");

  child.Signal(SIGTERM);
  EXPECT_EQ(child.Wait(std::chrono::seconds(15)), 0) << child.err();
  EXPECT_NE(child.err().find("event=frontdoor_stopped"), std::string::npos) << child.err();
}

// strata-scheduler serve: the front door's series are on the scheduler's /metrics (the port Prometheus
// scrapes), beside the scheduler's own; the public HTTP port shows the same registry only with
// --http-metrics. The start line says which tenancy is on.
TEST(FrontDoorProcess, SchedulerMetricsPortShowsTheFrontDoorSeries) {
  for (const bool http_metrics : {false, true}) {
    const int http_port = FreePort();
    std::vector<std::string> argv = {STRATA_SCHEDULER_PATH, "serve",
                                     "--grpc-address",      "127.0.0.1:0",
                                     "--metrics-host",      "127.0.0.1",
                                     "--metrics-port",      "0",
                                     "--http-port",         std::to_string(http_port),
                                     "--http-host",         "127.0.0.1",
                                     "--model-dir",         kModelDir,
                                     "--served-model-name", "tiny"};
    if (http_metrics) argv.insert(argv.end(), {"--http-metrics", "--shared-prefix-cache"});
    ChildProcess child(argv);
    const std::string log = child.ReadStderrUntil("event=frontdoor_started", std::chrono::seconds(20));
    ASSERT_NE(log.find("event=frontdoor_started"), std::string::npos) << log;
    EXPECT_THAT(log, HasSubstr(http_metrics ? "prefix_cache=shared_by_all_callers"
                                            : "prefix_cache=per_client_address_and_user"));
    EXPECT_THAT(log, HasSubstr(http_metrics ? "http_metrics=on" : "http_metrics=off"));
    const int metrics_port = FieldAfter(log, "metrics_port=");
    ASSERT_GT(metrics_port, 0) << log;

    httplib::Client http("127.0.0.1", http_port);
    httplib::Result malformed = http.Post("/v1/completions", "{\"model\": ", "application/json");
    ASSERT_TRUE(malformed);
    EXPECT_EQ(malformed->status, 400);
    const std::string counted =
        "strata_frontdoor_requests_total{endpoint=\"/v1/completions\",status=\"400\",model_name=\"tiny\"} 1";
    for (const int port : {metrics_port, http_port}) {
      httplib::Client client("127.0.0.1", port);
      httplib::Result metrics = client.Get("/metrics");
      ASSERT_TRUE(metrics) << "port " << port;
      if (port == http_port && !http_metrics) {
        EXPECT_EQ(metrics->status, 404) << "the public port serves /metrics without --http-metrics";
        continue;
      }
      ASSERT_EQ(metrics->status, 200) << "port " << port;
      EXPECT_THAT(metrics->body, HasSubstr(counted)) << "port " << port;
      EXPECT_THAT(metrics->body, HasSubstr("strata_frontdoor_ttft_seconds_count{model_name=\"tiny\"} 0")) << "port " << port;
      EXPECT_THAT(metrics->body, HasSubstr("strata_scheduler_holders{kind=\"worker\"} 0")) << "port " << port;
    }
    child.Signal(SIGTERM);
    EXPECT_EQ(child.Wait(std::chrono::seconds(15)), 0) << child.err();
  }
}

// The whole path with real processes: strata-scheduler with the front door, and the real strata-worker
// (CPU) registering itself. Skips where strata-worker is not built.
TEST(FrontDoorProcess, RealWorkerServesGreedyTokensAndReusesThePrefix) {
#ifndef STRATA_WORKER_PATH
  GTEST_SKIP() << "no strata-worker target in this build";
#else
  if (!std::filesystem::exists(STRATA_WORKER_PATH)) {
    GTEST_SKIP() << STRATA_WORKER_PATH << " is not built (ninja strata-worker)";
  }
  const int http_port = FreePort();
  ChildProcess scheduler({STRATA_SCHEDULER_PATH, "serve", "--grpc-address", "127.0.0.1:0", "--metrics-host",
                          "127.0.0.1", "--metrics-port", "0", "--http-port", std::to_string(http_port), "--http-host",
                          "127.0.0.1", "--model-dir", kModelDir, "--served-model-name", "tiny", "--policy",
                          "cache-aware"});
  const std::string log = scheduler.ReadStderrUntil("event=frontdoor_started", std::chrono::seconds(20));
  const int grpc_port = FieldAfter(log, "grpc_port=");
  ASSERT_GT(grpc_port, 0) << log;
  ChildProcess worker({STRATA_WORKER_PATH, "--model", kModelDir, "--backend", "cpu", "--threads", "1",
                       "--grpc-address", "127.0.0.1:0", "--metrics-port", "-1", "--served-model-name", "tiny",
                       "--worker-id", "worker-real", "--block-tokens", "16", "--scheduler",
                       "127.0.0.1:" + std::to_string(grpc_port)},
                      strata::testing::ChildOutput::kInherit);
  httplib::Client http("127.0.0.1", http_port);
  http.set_read_timeout(30, 0);
  ASSERT_TRUE(testing::WaitForWorkers(http_port, 1)) << "strata-worker did not register";

  const Golden golden = LoadGolden();
  const Json body = {{"model", "tiny"}, {"prompt", golden.prompt}, {"max_tokens", 8}, {"temperature", 0},
                     {"ignore_eos", true}};
  httplib::Result first = http.Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, 200) << first->body;
  const Json a = Json::parse(first->body);
  absl::StatusOr<model::Tokenizer> tokenizer = model::Tokenizer::FromFile(kModelDir + "/tokenizer.json");
  ASSERT_TRUE(tokenizer.ok());
  EXPECT_EQ(a["choices"][0]["text"],
            tokenizer->Decode(absl::MakeConstSpan(golden.greedy).subspan(0, 8), model::SpecialTokens::kSkip));
  EXPECT_EQ(a["usage"]["strata"]["worker_id"], "worker-real");
  EXPECT_EQ(a["usage"]["completion_tokens"], 8);
  // The same prompt again: its full blocks come from the worker's cache (tier H), not prefill.
  EXPECT_TRUE(WaitFor(
      [&] {
        httplib::Result again = http.Post("/v1/completions", body.dump(), "application/json");
        return again && again->status == 200 &&
               Json::parse(again->body)["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>() > 0;
      },
      std::chrono::seconds(20)));

  worker.Signal(SIGTERM);
  EXPECT_TRUE(worker.Wait(std::chrono::seconds(20)).has_value());
  scheduler.Signal(SIGTERM);
  EXPECT_EQ(scheduler.Wait(std::chrono::seconds(15)), 0) << scheduler.err();
#endif
}

}  // namespace
}  // namespace strata::frontdoor
