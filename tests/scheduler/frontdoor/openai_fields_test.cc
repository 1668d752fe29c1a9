// OpenAI's fields beyond one plain sample, end to end on loopback (a real scheduler, the CPU engine behind a
// real Worker service, the HTTP front door): logprobs and top_logprobs against the engine's own log-softmax
// of its F32 CPU logits, echo (with the prompt's logprobs), n > 1 choices, and the fields that are refused
// with a 400 naming them (finish_reason "abort": service_test.cc, WorkerDyingMidStream...). Then the same
// logprobs through the real strata-worker, and its n choices sharing the prompt's KV blocks.
#include <httplib.h>
#include <signal.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "scheduler/frontdoor/frontdoor.h"
#include "scheduler/service.h"
#include "tests/scheduler/frontdoor/engine_worker.h"
#include "tests/scheduler/frontdoor/frontdoor_testing.h"
#include "tests/testing/child_process.h"
#include "tests/testing/loopback.h"
#include "tests/testing/metrics_scrape.h"
#include "worker/engine/cpu_backend.h"
#include "worker/engine/engine.h"

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
// The engine computes logprobs in double from its float logits and sends floats: what a client reads is
// the engine's log-softmax to within float rounding.
constexpr double kTolerance = 1e-5;

// The golden prompt and the engine's greedy tokens after it (CPU).
std::vector<int32_t> Golden(const char* key) {
  std::ifstream file(kModelDir + "/golden.json");
  const Json json = Json::parse(file);
  return std::string(key) == "prompt_ids" ? json["prompt_ids"].get<std::vector<int32_t>>()
                                          : json["cpu"]["greedy_ids"].get<std::vector<int32_t>>();
}

// Characters (code points) of UTF-8 text: what text_offset counts.
size_t Characters(const std::string& text) {
  return std::count_if(text.begin(), text.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}


// The engine's own log-softmax (in double) of the rows that predict each token after the first of
// prompt + generated, computed as a worker computes them: the prompt's rows in one pass, then each
// generated token alone. rows[k] predicts token k + 1.
std::vector<std::vector<double>> ReferenceLogSoftmax(engine::Engine& engine, const std::vector<int32_t>& prompt,
                                                     const std::vector<int32_t>& generated) {
  const int64_t vocab = engine.config().vocab_size;
  const int64_t tokens = static_cast<int64_t>(prompt.size() + generated.size());
  absl::StatusOr<engine::Sequence> sequence = engine.NewSequence(tokens);
  EXPECT_TRUE(sequence.ok()) << sequence.status();
  std::vector<int64_t> rows(prompt.size());
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>(i);
  absl::StatusOr<std::vector<float>> logits = engine.Forward(*sequence, prompt, rows);
  EXPECT_TRUE(logits.ok()) << logits.status();
  std::vector<float> all = *logits;
  const int64_t first = 0;
  for (size_t j = 0; j + 1 < generated.size(); ++j) {
    absl::StatusOr<std::vector<float>> next = engine.Forward(*sequence, {&generated[j], 1}, {&first, 1});
    EXPECT_TRUE(next.ok()) << next.status();
    all.insert(all.end(), next->begin(), next->end());
  }
  std::vector<std::vector<double>> out;
  for (size_t r = 0; r * vocab < all.size(); ++r) {
    const float* row = all.data() + r * vocab;
    double max = row[0], sum = 0;
    for (int64_t i = 0; i < vocab; ++i) max = std::max<double>(max, row[i]);
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(row[i] - max);
    std::vector<double> logprobs(vocab);
    for (int64_t i = 0; i < vocab; ++i) logprobs[i] = row[i] - max - std::log(sum);
    out.push_back(std::move(logprobs));
  }
  return out;
}

// The ids of the `n` largest entries of `row`, largest first.
std::vector<int32_t> TopIds(const std::vector<double>& row, int n) {
  std::vector<int32_t> ids(row.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(),
                    [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
  ids.resize(n);
  return ids;
}

// Checks a completions `logprobs` object (echo: the prompt's tokens first) against the reference.
void ExpectCompletionLogprobs(const Json& logprobs, const model::Tokenizer& tokenizer,
                              const std::vector<int32_t>& prompt, const std::vector<int32_t>& generated,
                              const std::vector<std::vector<double>>& reference, int top) {
  std::vector<int32_t> ids = prompt;
  ids.insert(ids.end(), generated.begin(), generated.end());
  ASSERT_EQ(logprobs["tokens"].size(), ids.size()) << logprobs.dump();
  EXPECT_TRUE(logprobs["token_logprobs"][0].is_null());
  EXPECT_TRUE(logprobs["top_logprobs"][0].is_null());
  EXPECT_EQ(logprobs["text_offset"][0], 0);
  for (size_t k = 1; k < ids.size(); ++k) {
    const std::vector<double>& row = reference[k - 1];
    EXPECT_EQ(logprobs["tokens"][k], tokenizer.Decode({&ids[k], 1})) << k;
    EXPECT_NEAR(logprobs["token_logprobs"][k].get<double>(), row[ids[k]], kTolerance) << "token " << k;
    const Json& alternatives = logprobs["top_logprobs"][k];
    EXPECT_LE(alternatives.size(), static_cast<size_t>(top + 1)) << k;
    // Texts of distinct ids may coincide (U+FFFD): those are not compared, nor the token's own text, which
    // shows the token's logprob.
    std::map<std::string, double> by_text;
    std::map<std::string, int> seen;
    ++seen[tokenizer.Decode({&ids[k], 1})];
    for (int32_t id : TopIds(row, top)) {
      const std::string text = tokenizer.Decode({&id, 1});
      by_text[text] = row[id];
      ++seen[text];
    }
    for (const auto& [text, value] : by_text) {
      if (seen[text] > 1) continue;
      ASSERT_TRUE(alternatives.contains(text))
          << "position " << k << " lacks '" << text << "': " << alternatives.dump();
      EXPECT_NEAR(alternatives[text].get<double>(), value, kTolerance) << k;
    }
    EXPECT_EQ(logprobs["text_offset"][k].get<uint64_t>(),
              logprobs["text_offset"][k - 1].get<uint64_t>() + Characters(tokenizer.Decode({&ids[k - 1], 1})))
        << k;
  }
}

class OpenAiFieldsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    scheduler::Options options = testing::LoopbackSchedulerOptions();
    absl::StatusOr<std::unique_ptr<scheduler::SchedulerServer>> server = scheduler::SchedulerServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    absl::StatusOr<std::unique_ptr<testing::EngineWorker>> worker = testing::EngineWorker::Start(kModelDir, kModel);
    ASSERT_TRUE(worker.ok()) << worker.status();
    worker_ = *std::move(worker);
    ASSERT_TRUE(server_->scheduler().Register(worker_->MakeRegistration("worker-0")).ok());
    options.model_dir = kModelDir;
    options.http_host = "127.0.0.1";
    options.http_port = 0;
    options.request_timeout = absl::Seconds(30);
    absl::StatusOr<std::unique_ptr<FrontDoor>> door = FrontDoor::Start(options, &server_->scheduler());
    ASSERT_TRUE(door.ok()) << door.status();
    door_ = *std::move(door);
    http_ = std::make_unique<httplib::Client>("127.0.0.1", door_->http_port());
    http_->set_read_timeout(30, 0);
    absl::StatusOr<std::unique_ptr<engine::Engine>> reference =
        engine::Engine::Create(worker_->model(), engine::CreateCpuBackend());
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = *std::move(reference);
  }

  Json PostJson(const std::string& path, const Json& body, int status = 200) {
    httplib::Result result = http_->Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(result);
    if (!result) return Json();
    EXPECT_EQ(result->status, status) << result->body;
    return Json::parse(result->body, nullptr, false);
  }
  std::vector<Json> PostStream(const std::string& path, Json body) {
    body["stream"] = true;
    httplib::Result result = http_->Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(result);
    std::vector<Json> chunks;
    if (!result) return chunks;
    EXPECT_EQ(result->status, 200) << result->body;
    const std::vector<std::string> data = SseData(result->body);
    EXPECT_FALSE(data.empty());
    EXPECT_EQ(data.back(), "[DONE]");
    for (size_t i = 0; i + 1 < data.size(); ++i) chunks.push_back(Json::parse(data[i]));
    return chunks;
  }
  const model::Tokenizer& tokenizer() const { return door_->model().tokenizer(); }

  std::unique_ptr<scheduler::SchedulerServer> server_;
  std::unique_ptr<testing::EngineWorker> worker_;
  std::unique_ptr<FrontDoor> door_;
  std::unique_ptr<httplib::Client> http_;
  std::unique_ptr<engine::Engine> reference_;
  const std::vector<int32_t> prompt_ = Golden("prompt_ids");
  const std::vector<int32_t> greedy_ = Golden("greedy_ids");
};

TEST_F(OpenAiFieldsTest, CompletionLogprobsWithEchoMatchTheEnginesLogSoftmax) {
  const Json request = {{"model", kModel},    {"prompt", prompt_}, {"max_tokens", 5}, {"temperature", 0},
                        {"ignore_eos", true}, {"logprobs", 3},     {"echo", true}};
  const Json body = PostJson("/v1/completions", request);
  const Json& choice = body["choices"][0];
  ASSERT_EQ(body["usage"]["completion_tokens"], 5);
  const std::vector<int32_t> generated(greedy_.begin(), greedy_.begin() + 5);
  const std::vector<std::vector<double>> reference = ReferenceLogSoftmax(*reference_, prompt_, generated);
  EXPECT_EQ(choice["text"], tokenizer().Decode(prompt_) + tokenizer().Decode(generated, model::SpecialTokens::kSkip));
  ExpectCompletionLogprobs(choice["logprobs"], tokenizer(), prompt_, generated, reference, 3);

  // Streamed: the echo chunk first (the prompt's text and logprobs), then the same tokens' logprobs.
  const std::vector<Json> chunks = PostStream("/v1/completions", request);
  ASSERT_GE(chunks.size(), 2u);
  EXPECT_EQ(chunks[0]["choices"][0]["text"], tokenizer().Decode(prompt_));
  Json merged = {{"tokens", Json::array()},
                 {"token_logprobs", Json::array()},
                 {"top_logprobs", Json::array()},
                 {"text_offset", Json::array()}};
  for (const Json& chunk : chunks) {
    const Json& logprobs = chunk["choices"][0]["logprobs"];
    if (logprobs.is_null()) continue;
    for (const char* key : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) {
      for (const Json& v : logprobs[key]) merged[key].push_back(v);
    }
  }
  EXPECT_EQ(merged, choice["logprobs"]);
}

TEST_F(OpenAiFieldsTest, ChatLogprobsHaveTheChatShapeStreamedAndNot) {
  const Json request = {{"model", kModel},    {"messages", {{{"role", "user"}, {"content", "Hello there"}}}},
                        {"max_tokens", 4},    {"temperature", 0},
                        {"ignore_eos", true}, {"logprobs", true},
                        {"top_logprobs", 2}};
  const Json body = PostJson("/v1/chat/completions", request);
  const Json& content = body["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 4u) << body.dump();
  std::string text;
  for (const Json& token : content) {
    ASSERT_EQ(token["top_logprobs"].size(), 2u);
    // Greedy: the token is the most likely one; the list is most likely first.
    EXPECT_EQ(token["top_logprobs"][0]["token"], token["token"]);
    EXPECT_NEAR(token["top_logprobs"][0]["logprob"].get<double>(), token["logprob"].get<double>(), 1e-12);
    EXPECT_GE(token["top_logprobs"][0]["logprob"].get<double>(), token["top_logprobs"][1]["logprob"].get<double>());
    EXPECT_LE(token["logprob"].get<double>(), 0.0);
    std::string bytes;
    for (const Json& b : token["bytes"]) bytes.push_back(static_cast<char>(b.get<int>()));
    EXPECT_EQ(bytes, token["token"].get<std::string>());
    text += bytes;
  }
  EXPECT_EQ(text, body["choices"][0]["message"]["content"]);  // plain ASCII tokens here
  Json streamed = Json::array();
  for (const Json& chunk : PostStream("/v1/chat/completions", request)) {
    const Json& logprobs = chunk["choices"][0]["logprobs"];
    if (!logprobs.is_null()) {
      for (const Json& token : logprobs["content"]) streamed.push_back(token);
    }
  }
  EXPECT_EQ(streamed, content);
  // Without logprobs there are none.
  Json plain = request;
  plain.erase("logprobs");
  plain.erase("top_logprobs");
  EXPECT_TRUE(PostJson("/v1/chat/completions", plain)["choices"][0]["logprobs"].is_null());
}

TEST_F(OpenAiFieldsTest, NChoicesAreIndependentSamplesSeededSeedPlusIndex) {
  const Json request = {{"model", kModel}, {"prompt", prompt_},  {"max_tokens", 6}, {"temperature", 1.0},
                        {"seed", 7},       {"ignore_eos", true}, {"n", 3}};
  const Json body = PostJson("/v1/completions", request);
  ASSERT_EQ(body["choices"].size(), 3u);
  EXPECT_EQ(body["usage"]["completion_tokens"], 18);
  EXPECT_EQ(body["usage"]["prompt_tokens"], prompt_.size());
  std::vector<std::string> texts;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(body["choices"][i]["index"], i);
    EXPECT_EQ(body["choices"][i]["finish_reason"], "length");
    texts.push_back(body["choices"][i]["text"]);
    // Choice i is the sample of seed + i, as vLLM seeds a request's choices.
    Json one = request;
    one["n"] = 1;
    one["seed"] = 7 + i;
    EXPECT_EQ(PostJson("/v1/completions", one)["choices"][0]["text"], texts.back()) << i;
  }
  EXPECT_FALSE(texts[0] == texts[1] && texts[1] == texts[2]) << "three samples at temperature 1 were identical";

  // Streamed: every choice's pieces, by index, make the same texts; each ends once.
  std::vector<std::string> streamed(3);
  std::vector<int> finished(3, 0);
  for (const Json& chunk : PostStream("/v1/completions", request)) {
    for (const Json& choice : chunk["choices"]) {
      const int index = choice["index"];
      streamed[index] += choice["text"].get<std::string>();
      if (!choice["finish_reason"].is_null()) ++finished[index];
    }
  }
  EXPECT_EQ(streamed, texts);
  EXPECT_EQ(finished, std::vector<int>({1, 1, 1}));

  // Chat too: n messages, each with the role.
  Json chat = {{"model", kModel}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}},
               {"max_tokens", 3}, {"ignore_eos", true},
               {"n", 2},          {"best_of", 2}};
  const Json reply = PostJson("/v1/chat/completions", chat);
  ASSERT_EQ(reply["choices"].size(), 2u);
  EXPECT_EQ(reply["choices"][1]["message"]["role"], "assistant");
  EXPECT_EQ(reply["usage"]["completion_tokens"], 6);
  std::vector<int> roles(2, 0);
  for (const Json& chunk : PostStream("/v1/chat/completions", chat)) {
    for (const Json& choice : chunk["choices"]) {
      if (choice["delta"].contains("role")) ++roles[choice["index"].get<int>()];
    }
  }
  EXPECT_EQ(roles, std::vector<int>({1, 1}));
}

TEST_F(OpenAiFieldsTest, EchoPutsThePromptTextBeforeTheCompletion) {
  const Json request = {{"model", kModel},  {"prompt", "Hello world"}, {"max_tokens", 3},
                        {"temperature", 0}, {"ignore_eos", true},      {"echo", true}};
  const Json body = PostJson("/v1/completions", request);
  const std::string text = body["choices"][0]["text"];
  EXPECT_EQ(text.rfind("Hello world", 0), 0u) << text;
  EXPECT_GT(text.size(), std::string("Hello world").size());
  EXPECT_TRUE(body["choices"][0]["logprobs"].is_null());
  const std::vector<Json> chunks = PostStream("/v1/completions", request);
  ASSERT_FALSE(chunks.empty());
  EXPECT_EQ(chunks[0]["choices"][0]["text"], "Hello world");
  std::string streamed;
  for (const Json& chunk : chunks) streamed += chunk["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(streamed, text);
}

// Each field Strata does not implement, sent over HTTP: a 400 whose param names it, and no worker call.
TEST_F(OpenAiFieldsTest, UnimplementedFieldsAreRefusedOverHttpNamingThem) {
  struct Case {
    const char* path;
    Json fields;
    const char* param;
  };
  const Json messages = {{{"role", "user"}, {"content", "x"}}};
  const std::vector<Case> cases = {
      {"/v1/chat/completions", {{"response_format", {{"type", "json_object"}}}}, "response_format"},
      {"/v1/chat/completions",
       {{"response_format", {{"type", "json_schema"}, {"json_schema", {{"name", "a"}}}}}},
       "response_format"},
      {"/v1/chat/completions", {{"tools", {{{"type", "function"}, {"function", {{"name", "f"}}}}}}}, "tools"},
      {"/v1/chat/completions", {{"tool_choice", "required"}}, "tool_choice"},
      {"/v1/chat/completions", {{"logit_bias", {{"5", 100}}}}, "logit_bias"},
      {"/v1/chat/completions", {{"top_logprobs", 2}}, "top_logprobs"},
      {"/v1/chat/completions", {{"logprobs", true}, {"top_logprobs", 21}}, "top_logprobs"},
      {"/v1/chat/completions", {{"echo", true}}, "echo"},
      {"/v1/chat/completions", {{"n", 2}, {"best_of", 3}}, "best_of"},
      {"/v1/chat/completions", {{"guided_json", {{"type", "object"}}}}, "guided_json"},
      {"/v1/chat/completions", {{"service_tier", "priority"}}, "service_tier"},
      {"/v1/completions", {{"best_of", 2}}, "best_of"},
      {"/v1/completions", {{"logprobs", 21}}, "logprobs"},
      {"/v1/completions", {{"suffix", "end"}}, "suffix"},
      {"/v1/completions", {{"prompt_logprobs", 1}}, "prompt_logprobs"},
      {"/v1/completions", {{"n", 0}}, "n"},
  };
  for (const Case& c : cases) {
    Json body = {{"model", kModel}, {"max_tokens", 2}};
    if (std::string(c.path) == "/v1/chat/completions") {
      body["messages"] = messages;
    } else {
      body["prompt"] = "x";
    }
    body.update(c.fields);
    const Json error = PostJson(c.path, body, 400);
    EXPECT_EQ(error["error"]["param"], c.param) << body.dump();
    EXPECT_EQ(error["error"]["type"], "invalid_request_error") << body.dump();
  }
  EXPECT_EQ(worker_->generate_calls(), 0);
}

// The real strata-worker (engine loop, batched prefill with every prompt row's logits, continuous
// batching of n choices) gives the same logprobs. Skips where strata-worker is not built.
TEST_F(OpenAiFieldsTest, RealWorkerLogprobsMatchTheEnginesLogSoftmax) {
#ifndef STRATA_WORKER_PATH
  GTEST_SKIP() << "no strata-worker target in this build";
#else
  if (!std::filesystem::exists(STRATA_WORKER_PATH)) GTEST_SKIP() << STRATA_WORKER_PATH << " is not built";
  const int http_port = strata::testing::FreePort();
  ChildProcess scheduler({STRATA_SCHEDULER_PATH, "serve", "--grpc-address", "127.0.0.1:0", "--metrics-host",
                          "127.0.0.1", "--metrics-port", "0", "--http-port", std::to_string(http_port), "--http-host",
                          "127.0.0.1", "--model-dir", kModelDir, "--served-model-name", "tiny"});
  const std::string log = scheduler.ReadStderrUntil("event=frontdoor_started", std::chrono::seconds(20));
  const int grpc_port = FieldAfter(log, "grpc_port=");
  ASSERT_GT(grpc_port, 0) << log;
  ChildProcess worker({STRATA_WORKER_PATH, "--model", kModelDir, "--backend", "cpu", "--threads", "1",
                       "--grpc-address", "127.0.0.1:0", "--metrics-host", "127.0.0.1", "--metrics-port", "0",
                       "--served-model-name", "tiny", "--worker-id", "worker-real", "--block-tokens", "16",
                       "--scheduler", "127.0.0.1:" + std::to_string(grpc_port)});
  const int metrics_port =
      FieldAfter(worker.ReadStderrUntil("event=worker_started", std::chrono::seconds(30)), "metrics_port=");
  ASSERT_GT(metrics_port, 0) << worker.err();
  httplib::Client http("127.0.0.1", http_port);
  http.set_read_timeout(30, 0);
  ASSERT_TRUE(testing::WaitForWorkers(http_port, 1)) << "strata-worker did not register";
  const Json request = {{"model", "tiny"},    {"prompt", prompt_}, {"max_tokens", 4}, {"temperature", 0},
                        {"ignore_eos", true}, {"logprobs", 2},     {"echo", true},    {"n", 2}};
  httplib::Result result = http.Post("/v1/completions", request.dump(), "application/json");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const Json body = Json::parse(result->body);
  const std::vector<int32_t> generated(greedy_.begin(), greedy_.begin() + 4);
  const std::vector<std::vector<double>> reference = ReferenceLogSoftmax(*reference_, prompt_, generated);
  ASSERT_EQ(body["choices"].size(), 2u);
  for (int i = 0; i < 2; ++i) {  // greedy: both choices are the same tokens
    ExpectCompletionLogprobs(body["choices"][i]["logprobs"], tokenizer(), prompt_, generated, reference, 2);
  }
  // n = 3 of a prompt this worker has not seen (its first token differs, so every block key does): choice 0
  // prefills it and stores its 18 full blocks in tier G, and choices 1 and 2 attach them (the 300th token's
  // block is partial, so all 18 are usable).
  const std::string gpu_hits = "strata_worker_cached_tokens_total{tier=\"gpu\",model_name=\"tiny\"}";
  const double before = strata::testing::MetricValue(metrics_port, gpu_hits).value_or(-1);
  ASSERT_GE(before, 0);
  std::vector<int32_t> fresh = prompt_;
  fresh[0] = fresh[0] == 1 ? 2 : 1;
  const Json three = {{"model", "tiny"}, {"prompt", fresh}, {"max_tokens", 2}, {"ignore_eos", true}, {"n", 3}};
  httplib::Result shared = http.Post("/v1/completions", three.dump(), "application/json");
  ASSERT_TRUE(shared);
  ASSERT_EQ(shared->status, 200) << shared->body;
  EXPECT_EQ(Json::parse(shared->body)["usage"]["completion_tokens"], 6);
  EXPECT_EQ(Json::parse(shared->body)["usage"]["prompt_tokens_details"]["cached_tokens"], 0);  // choice 0's
  EXPECT_EQ(strata::testing::MetricValue(metrics_port, gpu_hits).value_or(-1) - before, 2.0 * 18 * 16);
  worker.Signal(SIGTERM);
  EXPECT_TRUE(worker.Wait(std::chrono::seconds(20)).has_value());
  scheduler.Signal(SIGTERM);
  EXPECT_EQ(scheduler.Wait(std::chrono::seconds(15)), 0) << scheduler.err();
#endif
}

}  // namespace
}  // namespace strata::frontdoor
