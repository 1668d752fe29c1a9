// The front door's limits as units: the API-key file's per-key options, the per-caller token bucket and
// concurrency count (on an injected clock), the body-size check and refusals of hostile bodies by the
// pure parse step (ParseRequest), and the token limits of ServedModel::Prepare on llama3-tiny.
#include "scheduler/frontdoor/limits.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/frontdoor/api_keys.h"
#include "scheduler/frontdoor/json_shape.h"
#include "scheduler/frontdoor/openai_http.h"
#include "scheduler/frontdoor/served_model.h"
#include "tests/testing/scratch_dir.h"

namespace strata::frontdoor {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kModelDir = std::string(STRATA_TEST_DATA_DIR) + "/models/llama3-tiny";

TEST(ApiKeyOptions, OverrideTheServersLimitsAndListModels) {
  strata::testing::ScratchDir dir = strata::testing::MakeTempDir("api_key_options");
  const std::filesystem::path path = dir.path() / "keys";
  std::ofstream(path) << "sk-plain team-a\n"
                         "sk-tuned team-b rps=0.5 burst=3 concurrency=2 models=llama3-tiny,other\n"
                         "sk-free team-c rps=0 concurrency=0\n";
  absl::StatusOr<ApiKeys> keys = ApiKeys::Load(path);
  ASSERT_TRUE(keys.ok()) << keys.status();
  const CallerLimits server{10, 20, 4};
  const Caller& plain = **keys->Find("Bearer sk-plain");
  const Caller& tuned = **keys->Find("Bearer sk-tuned");
  const Caller& free = **keys->Find("Bearer sk-free");
  EXPECT_NE(plain.index, tuned.index);
  EXPECT_EQ(plain.LimitsOver(server).rate_rps, 10);
  EXPECT_EQ(plain.LimitsOver(server).concurrency, 4);
  EXPECT_EQ(tuned.LimitsOver(server).rate_rps, 0.5);
  EXPECT_EQ(tuned.LimitsOver(server).burst, 3);
  EXPECT_EQ(tuned.LimitsOver(server).concurrency, 2);
  EXPECT_EQ(free.LimitsOver(server).rate_rps, 0);  // 0: unlimited for this key
  EXPECT_EQ(free.LimitsOver(server).concurrency, 0);
  EXPECT_TRUE(plain.MayUse("anything"));
  EXPECT_TRUE(tuned.MayUse("other"));
  EXPECT_FALSE(tuned.MayUse("llama3"));
}

TEST(ApiKeyOptions, BadLinesNameTheLineAndNeverTheKey) {
  strata::testing::ScratchDir dir = strata::testing::MakeTempDir("api_key_options");
  const std::filesystem::path path = dir.path() / "keys";
  struct Case {
    const char* line;
    const char* message;
  };
  for (const Case& c : {Case{"sk-secret team colour=blue", ":2: unknown option 'colour'"},
                        Case{"sk-secret team rps=fast", ":2: rps=fast: expected a number >= 0"},
                        Case{"sk-secret team burst=-1", ":2: burst=-1: expected a number >= 0"},
                        Case{"sk-secret team concurrency=1.5", ":2: concurrency=1.5: expected an integer >= 0"},
                        Case{"sk-secret team models=", ":2: models=: expected model names"},
                        Case{"sk-secret team rps", ":2: expected option=value"},
                        Case{"sk-secret", ":2: expected `key tenant [option=value ...]`"}}) {
    std::ofstream(path) << "# comment\n" << c.line << "\n";
    const absl::Status status = ApiKeys::Load(path).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.line;
    EXPECT_THAT(status.message(), HasSubstr(c.message)) << c.line;
    EXPECT_THAT(status.message(), Not(HasSubstr("sk-secret"))) << c.line;
  }
}

TEST(CallerLimiter, BurstThenRefusalWithRetryAfterThenRefill) {
  CallerLimiter limiter;
  const CallerLimits limits{0.5, 2, 0};
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  std::vector<Admission> admitted;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<Admission> a = limiter.Admit(7, limits, t0);
    ASSERT_TRUE(a.ok()) << i << ": " << a.status();
    admitted.push_back(*std::move(a));
  }
  absl::StatusOr<Admission> refused = limiter.Admit(7, limits, t0);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(HttpStatusOf(refused.status()), 429);
  EXPECT_EQ(OpenAiCodeOf(refused.status()), "rate_limit_exceeded");
  EXPECT_EQ(RetryAfterOf(refused.status()), 2);  // one token at 0.5/s
  EXPECT_EQ(RefusalReasonOf(refused.status()), "rate_limit");
  EXPECT_TRUE(limiter.Admit(8, limits, t0).ok()) << "another caller has its own bucket";
  EXPECT_FALSE(limiter.Admit(7, limits, t0 + absl::Seconds(1)).ok());  // half a token
  EXPECT_TRUE(limiter.Admit(7, limits, t0 + absl::Seconds(2)).ok());
  EXPECT_FALSE(limiter.Admit(7, limits, t0 + absl::Seconds(2)).ok());
  // A long pause refills to the burst, no further.
  EXPECT_TRUE(limiter.Admit(7, limits, t0 + absl::Seconds(100)).ok());
  EXPECT_TRUE(limiter.Admit(7, limits, t0 + absl::Seconds(100)).ok());
  EXPECT_FALSE(limiter.Admit(7, limits, t0 + absl::Seconds(100)).ok());
  // Without a burst the bucket holds max(1, rps).
  EXPECT_TRUE(limiter.Admit(9, {0.001, 0, 0}, t0).ok());
  EXPECT_FALSE(limiter.Admit(9, {0.001, 0, 0}, t0).ok());
}

TEST(CallerLimiter, ConcurrencySlotsAreHeldUntilTheAdmissionGoes) {
  CallerLimiter limiter;
  const CallerLimits limits{0, 0, 2};
  absl::StatusOr<Admission> a = limiter.Admit(1, limits);
  absl::StatusOr<Admission> b = limiter.Admit(1, limits);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(limiter.open(1), 2);
  absl::StatusOr<Admission> c = limiter.Admit(1, limits);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(HttpStatusOf(c.status()), 429);
  EXPECT_EQ(RetryAfterOf(c.status()), 1);
  EXPECT_EQ(RefusalReasonOf(c.status()), "concurrency_limit");
  EXPECT_THAT(c.status().message(), HasSubstr("2 are open and the limit is 2"));
  EXPECT_EQ(limiter.open(1), 2) << "a refused request takes no slot";
  Admission moved = *std::move(a);
  EXPECT_EQ(limiter.open(1), 2);
  moved.Release();
  moved.Release();  // once only
  EXPECT_EQ(limiter.open(1), 1);
  EXPECT_TRUE(limiter.Admit(1, limits).ok());  // a temporary: released at once
  { Admission scoped = *limiter.Admit(1, limits); }
  EXPECT_EQ(limiter.open(1), 1);
}

TEST(ParseRequest, RefusesABodyOverTheLimitBeforeParsingIt) {
  const RequestLimits limits{64, 0, 0};
  const std::string big = "{\"model\": \"m\", \"prompt\": \"" + std::string(100, 'x') + "\"}";
  absl::StatusOr<GenerationRequest> r = ParseRequest(big, Endpoint::kCompletions, limits);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(HttpStatusOf(r.status()), 413);
  EXPECT_EQ(OpenAiCodeOf(r.status()), "request_too_large");
  EXPECT_THAT(r.status().message(), HasSubstr("64 bytes"));
  // Not even parsed: garbage over the limit is a 413 too, and under it a 400.
  EXPECT_EQ(HttpStatusOf(ParseRequest(std::string(65, '{'), Endpoint::kChat, limits).status()), 413);
  EXPECT_EQ(HttpStatusOf(ParseRequest(std::string(64, '{'), Endpoint::kChat, limits).status()), 400);
  EXPECT_TRUE(ParseRequest(R"({"model": "m", "prompt": "hi"})", Endpoint::kCompletions, limits).ok());
}

TEST(ParseRequest, RefusesJsonNestedTooDeepOrWithTooManyElementsBeforeParsingIt) {
  RequestLimits limits;
  limits.json = {.max_depth = 4, .max_elements = 8};
  const std::string deep = R"({"model": "m", "prompt": [[[[1]]]]})";  // depth 5
  absl::StatusOr<GenerationRequest> r = ParseRequest(deep, Endpoint::kCompletions, limits);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(HttpStatusOf(r.status()), 400);
  EXPECT_EQ(OpenAiTypeOf(r.status()), "invalid_request_error");
  EXPECT_THAT(r.status().message(), HasSubstr("deeper than this server accepts (4 levels)"));
  // Not parsed: an unterminated document past the depth is the same refusal, not a syntax error.
  EXPECT_THAT(ParseRequest(std::string(1 << 20, '['), Endpoint::kChat, limits).status().message(),
              HasSubstr("(4 levels)"));
  r = ParseRequest(R"({"model": "m", "prompt": [1, 2, 3, 4, 5, 6, 7, 8]})", Endpoint::kCompletions, limits);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("more elements than this server accepts (8)"));
  // Brackets and commas inside strings (escaped quotes too) are text, not structure.
  EXPECT_TRUE(
      ParseRequest(R"({"model": "m", "prompt": "[[[[[[,,,,,,,,,,\"[[[[[\"]]"})", Endpoint::kCompletions, limits).ok());
  EXPECT_TRUE(ParseRequest(R"({"model": "m", "prompt": [[1, 2, 3]]})", Endpoint::kCompletions, limits).ok());
}

TEST(JsonShapeScanner, FedInPiecesAgreesWithTheWholeDocument) {
  const JsonShapeLimits limits{.max_depth = 3, .max_elements = 0};
  const std::string document = R"({"a": "x\"[[[[", "b": [[1]], "c": "\\"})";
  ASSERT_TRUE(CheckJsonShape(document, limits).ok());
  const std::string deeper = R"({"a": "x\"[[[[", "b": [[[1]]], "c": "\\"})";
  ASSERT_FALSE(CheckJsonShape(deeper, limits).ok());
  for (const std::string* text : {&document, &deeper}) {
    for (size_t piece = 1; piece <= 3; ++piece) {  // escapes and quotes split across pieces
      JsonShapeScanner scanner(limits);
      absl::Status status;
      for (size_t at = 0; at < text->size() && status.ok(); at += piece) {
        status = scanner.Feed(std::string_view(*text).substr(at, piece));
      }
      EXPECT_EQ(status.ok(), text == &document) << *text << " in pieces of " << piece;
    }
  }
}

// Every hostile or mistyped body is a 400 in OpenAI's shape, never a 5xx (an exception or a crash).
TEST(ParseRequest, HostileBodiesAreInvalidRequestsNeverServerErrors) {
  const std::vector<std::string> bodies = {
      "",
      "null",
      "[]",
      "\"x\"",
      "1e999",
      "{",
      "{\"model\": \"m\", \"prompt\": \"a\"",
      std::string(100000, '[') + std::string(100000, ']'),
      "{\"model\": " + std::string(50000, '[') + std::string(50000, ']') + "}",
      R"({"model": "m", "prompt": "\ud800"})",
      "{\"model\": \"m\", \"prompt\": \"\xff\xfe\"}",
      R"({"model": 1, "prompt": "a"})",
      R"({"model": null, "prompt": "a"})",
      R"({"model": "m"})",
      R"({"model": "m", "prompt": {}})",
      R"({"model": "m", "prompt": [[]]})",
      R"({"model": "m", "prompt": [[1], [2]]})",
      R"({"model": "m", "prompt": [1, "a"]})",
      R"({"model": "m", "prompt": [-1]})",
      R"({"model": "m", "prompt": [1.5]})",
      R"({"model": "m", "prompt": [4294967296]})",
      R"({"model": "m", "prompt": [18446744073709551615]})",
      R"({"model": "m", "prompt": "a", "max_tokens": "5"})",
      R"({"model": "m", "prompt": "a", "max_tokens": 0})",
      R"({"model": "m", "prompt": "a", "max_tokens": -1})",
      R"({"model": "m", "prompt": "a", "max_tokens": 1e20})",
      R"({"model": "m", "prompt": "a", "max_tokens": 18446744073709551615})",
      R"({"model": "m", "prompt": "a", "temperature": "hot"})",
      R"({"model": "m", "prompt": "a", "temperature": 9})",
      R"({"model": "m", "prompt": "a", "top_p": 0})",
      R"({"model": "m", "prompt": "a", "top_k": -2})",
      R"({"model": "m", "prompt": "a", "seed": 1.5})",
      R"({"model": "m", "prompt": "a", "stop": [1]})",
      R"({"model": "m", "prompt": "a", "stop": {}})",
      R"({"model": "m", "prompt": "a", "stop_token_ids": "1"})",
      R"({"model": "m", "prompt": "a", "n": 0})",
      R"({"model": "m", "prompt": "a", "n": "1"})",
      R"({"model": "m", "prompt": "a", "best_of": 3})",
      R"({"model": "m", "prompt": "a", "logprobs": 21})",
      R"({"model": "m", "prompt": "a", "echo": 1})",
      R"({"model": "m", "prompt": "a", "stream": "yes"})",
      R"({"model": "m", "prompt": "a", "stream_options": {"include_usage": true}})",
      R"({"model": "m", "prompt": "a", "stream": true, "stream_options": []})",
      R"({"model": "m", "prompt": "a", "cache_salt": 5})",
      R"({"model": "m", "prompt": "a", "ignore_eos": 1})",
  };
  const std::vector<std::string> chats = {
      R"({"model": "m"})", R"({"model": "m", "messages": []})", R"({"model": "m", "messages": {}})",
      R"({"model": "m", "messages": [1]})", R"({"model": "m", "messages": [{}]})",
      R"({"model": "m", "messages": [{"role": 1, "content": "a"}]})",
      R"({"model": "m", "messages": [{"role": "user"}]})", R"({"model": "m", "messages": [{"role": "user", "content": 5}]})",
      R"({"model": "m", "messages": [{"role": "user", "content": null}]})",
      R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
      R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]})",
      R"({"model": "m", "messages": [{"role": "user", "content": [7]}]})",
      R"({"model": "m", "messages": [{"role": "user", "content": "a"}], "tools": [{}]})",
      R"({"model": "m", "messages": [{"role": "user", "content": "a"}], "add_generation_prompt": "no"})",
  };
  for (const auto& [endpoint, list] : {std::pair{Endpoint::kCompletions, &bodies}, std::pair{Endpoint::kChat, &chats}}) {
    for (const std::string& body : *list) {
      absl::StatusOr<GenerationRequest> r = ParseRequest(body, endpoint, RequestLimits{});
      const std::string shown = body.substr(0, 80);
      ASSERT_FALSE(r.ok()) << shown;
      EXPECT_EQ(HttpStatusOf(r.status()), 400) << shown << ": " << r.status();
      const nlohmann::json error = ErrorJson(r.status());
      EXPECT_EQ(error["error"]["type"], "invalid_request_error") << shown;
      EXPECT_FALSE(error["error"]["message"].get<std::string>().empty()) << shown;
      EXPECT_TRUE(error["error"].contains("param") && error["error"].contains("code")) << shown;
    }
  }
}

TEST(ServedModelLimits, PromptAndCompletionTokensAreBoundedWithClearErrors) {
  absl::StatusOr<std::unique_ptr<ServedModel>> model = ServedModel::Load(kModelDir, "");
  ASSERT_TRUE(model.ok()) << model.status();
  const RequestLimits limits{0, 32, 8};
  GenerationRequest request;
  request.model = "llama3-tiny";
  request.prompt_ids = std::vector<int32_t>(33, 7);
  absl::StatusOr<PreparedRequest> long_prompt = (*model)->Prepare(request, limits);
  ASSERT_FALSE(long_prompt.ok());
  EXPECT_EQ(HttpStatusOf(long_prompt.status()), 400);
  EXPECT_EQ(OpenAiParamOf(long_prompt.status()), "prompt");
  EXPECT_THAT(long_prompt.status().message(), HasSubstr("has 33 tokens"));
  EXPECT_THAT(long_prompt.status().message(), HasSubstr("at most 32 prompt tokens"));

  request.prompt_ids.resize(32);
  absl::StatusOr<PreparedRequest> capped = (*model)->Prepare(request, limits);
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_EQ(capped->max_tokens, 8u);  // completions' default 16, capped
  request.max_tokens = 9;
  absl::StatusOr<PreparedRequest> too_many = (*model)->Prepare(request, limits);
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(HttpStatusOf(too_many.status()), 400);
  EXPECT_EQ(OpenAiParamOf(too_many.status()), "max_tokens");
  EXPECT_THAT(too_many.status().message(), HasSubstr("max_tokens is 9, but this server generates at most 8"));
  request.max_tokens = 8;
  EXPECT_TRUE((*model)->Prepare(request, limits).ok());

  // Chat: counted after the template, and the default (the rest of the context) is capped.
  GenerationRequest chat;
  chat.endpoint = Endpoint::kChat;
  chat.model = "llama3-tiny";
  chat.messages = {{"user", "hi"}};
  absl::StatusOr<PreparedRequest> short_chat = (*model)->Prepare(chat, limits);
  ASSERT_TRUE(short_chat.ok()) << short_chat.status();
  EXPECT_EQ(short_chat->max_tokens, 8u);
  chat.messages = {{"user", std::string(200, 'x')}};
  const uint32_t long_chat_tokens = static_cast<uint32_t>(
      (*model)->tokenizer().Encode(*(*model)->RenderChat(chat), model::SpecialTokens::kSkip)->size());
  absl::StatusOr<PreparedRequest> long_chat = (*model)->Prepare(chat, limits);
  ASSERT_FALSE(long_chat.ok());
  EXPECT_EQ(OpenAiParamOf(long_chat.status()), "messages");
  EXPECT_THAT(long_chat.status().message(), HasSubstr("at most 32 prompt tokens"));
  // No limits: the context alone.
  EXPECT_EQ((*(*model)->Prepare(chat, RequestLimits{})).max_tokens, 8192 - long_chat_tokens);
}

}  // namespace
}  // namespace strata::frontdoor
