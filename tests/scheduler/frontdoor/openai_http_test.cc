// The OpenAI wire format: request parsing and its refusals, error objects, response and chunk shapes;
// the API-key table; the served model's Prepare (model name, tokens, context limits).
#include "scheduler/frontdoor/openai_http.h"

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/frontdoor/api_keys.h"
#include "scheduler/frontdoor/served_model.h"
#include "tests/testing/scratch_dir.h"

namespace strata::frontdoor {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

const std::string kModelDir = std::string(STRATA_TEST_DATA_DIR) + "/models/llama3-tiny";

TEST(OpenAiHttp, ParsesACompletionWithEveryField) {
  absl::StatusOr<GenerationRequest> r = ParseCompletionRequest(R"({
    "model": "m", "prompt": [5, 6, 7], "max_tokens": 9, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
    "seed": 17, "stop": ["\n\n", "END"], "stop_token_ids": [3], "ignore_eos": true, "cache_salt": "s1",
    "disable_prefix_cache": true,
    "stream": true, "stream_options": {"include_usage": true}, "n": 3, "best_of": 3, "user": "ignored",
    "logprobs": 4, "echo": true, "service_tier": "auto"})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "m");
  EXPECT_THAT(r->prompt_ids, ElementsAre(5, 6, 7));
  EXPECT_FALSE(r->prompt_text.has_value());
  EXPECT_EQ(r->max_tokens, 9u);
  EXPECT_FLOAT_EQ(r->temperature, 0.5f);
  EXPECT_FLOAT_EQ(r->top_p, 0.9f);
  EXPECT_EQ(r->top_k, 40u);
  EXPECT_EQ(r->seed, 17u);
  EXPECT_THAT(r->stop, ElementsAre("\n\n", "END"));
  EXPECT_THAT(r->stop_token_ids, ElementsAre(3));
  EXPECT_TRUE(r->ignore_eos);
  EXPECT_EQ(r->cache_salt, "s1");
  EXPECT_TRUE(r->disable_prefix_cache);
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_EQ(r->n, 3u);
  EXPECT_EQ(r->top_logprobs, 4);
  EXPECT_TRUE(r->echo);

  absl::StatusOr<GenerationRequest> text = ParseCompletionRequest(R"({"model": "m", "prompt": ["hello"], "stop": "x"})");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->prompt_text, "hello");
  EXPECT_THAT(text->stop, ElementsAre("x"));
  EXPECT_FALSE(text->max_tokens.has_value());
  EXPECT_FLOAT_EQ(text->temperature, 1.0f);
}

TEST(OpenAiHttp, RefusesBadRequestsAsInvalidRequestErrorsNamingTheParam) {
  struct Case {
    const char* body;
    const char* param;
    const char* message;
  };
  for (const Case& c : {
           Case{"{not json", "", "could not parse the JSON body"},
           Case{"[1]", "", "must be a JSON object"},
           Case{R"({"prompt": "x"})", "model", "you must provide a model parameter"},
           Case{R"({"model": "m"})", "prompt", "you must provide a prompt"},
           Case{R"({"model": "m", "prompt": ["a", "b"]})", "prompt", "batched prompts"},
           Case{R"({"model": "m", "prompt": [1, -2]})", "prompt", "token ids"},
           Case{R"({"model": "m", "prompt": {}})", "prompt", "must be a string"},
           Case{R"({"model": "m", "prompt": "x", "n": 200})", "n", "[1, 128]"},
           Case{R"({"model": "m", "prompt": "x", "n": 2, "best_of": 3})", "best_of", "must equal n (2)"},
           Case{R"({"model": "m", "prompt": "x", "max_tokens": 0})", "max_tokens", "not a valid value"},
           Case{R"({"model": "m", "prompt": "x", "temperature": 3})", "temperature", "[0, 2]"},
           Case{R"({"model": "m", "prompt": "x", "top_p": 0})", "top_p", "(0, 1]"},
           Case{R"({"model": "m", "prompt": "x", "stop": 5})", "stop", "string or an array of strings"},
           Case{R"({"model": "m", "prompt": "x", "logprobs": 21})", "logprobs", "[0, 20]"},
           Case{R"({"model": "m", "prompt": "x", "logprobs": true})", "logprobs", "must be an integer"},
           Case{R"({"model": "m", "prompt": "x", "top_logprobs": 2})", "top_logprobs", "belongs to /v1/chat"},
           Case{R"({"model": "m", "prompt": "x", "echo": "yes"})", "echo", "must be a boolean"},
           Case{R"({"model": "m", "prompt": "x", "prompt_logprobs": 1})", "prompt_logprobs", "come with 'echo'"},
           Case{R"({"model": "m", "prompt": "x", "suffix": "y"})", "suffix", "insertion"},
           Case{R"({"model": "m", "prompt": "x", "truncate_prompt_tokens": 3})", "truncate_prompt_tokens",
                "never truncated"},
           Case{R"({"model": "m", "prompt": "x", "stream_options": {"include_usage": true}})", "stream_options",
                "only allowed with 'stream': true"},
       }) {
    absl::StatusOr<GenerationRequest> r = ParseCompletionRequest(c.body);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(HttpStatusOf(r.status()), 400) << c.body;
    const Json error = ErrorJson(r.status());
    EXPECT_EQ(error["error"]["type"], "invalid_request_error") << c.body;
    EXPECT_THAT(error["error"]["message"].get<std::string>(), HasSubstr(c.message)) << c.body;
    if (*c.param) {
      EXPECT_EQ(error["error"]["param"], c.param) << c.body;
    } else {
      EXPECT_TRUE(error["error"]["param"].is_null()) << c.body;
    }
  }
}

TEST(OpenAiHttp, ParsesChatLogprobsAsABooleanAndACount) {
  const std::string messages = R"("model": "m", "messages": [{"role": "user", "content": "x"}])";
  auto top_logprobs = [&](const std::string& fields) {
    absl::StatusOr<GenerationRequest> r = ParseChatRequest("{" + messages + fields + "}");
    EXPECT_TRUE(r.ok()) << fields << ": " << r.status();
    return r.ok() ? r->top_logprobs : -100;
  };
  EXPECT_EQ(top_logprobs(""), -1);
  EXPECT_EQ(top_logprobs(R"(, "logprobs": false)"), -1);
  EXPECT_EQ(top_logprobs(R"(, "logprobs": true)"), 0);
  EXPECT_EQ(top_logprobs(R"(, "logprobs": true, "top_logprobs": 20)"), 20);
  EXPECT_EQ(top_logprobs(R"(, "logprobs": true, "top_logprobs": null)"), 0);
  absl::StatusOr<GenerationRequest> n = ParseChatRequest("{" + messages + R"(, "n": 4})");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->n, 4u);
  absl::StatusOr<GenerationRequest> completion = ParseCompletionRequest(R"({"model": "m", "prompt": "x"})");
  ASSERT_TRUE(completion.ok());
  EXPECT_EQ(completion->top_logprobs, -1);
  EXPECT_FALSE(completion->echo);
  EXPECT_EQ(completion->n, 1u);
}

TEST(OpenAiHttp, ParsesPenaltiesAndMinPAndAcceptsWhatAsksForNothing) {
  absl::StatusOr<GenerationRequest> r = ParseChatRequest(R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
    "presence_penalty": 0.5, "frequency_penalty": -1.5, "repetition_penalty": 1.2, "min_p": 0.05,
    "response_format": {"type": "text"}, "logprobs": false, "tools": [], "tool_choice": "none", "store": false,
    "skip_special_tokens": true, "modalities": ["text"], "metadata": {"k": "v"}})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FLOAT_EQ(r->presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r->frequency_penalty, -1.5f);
  EXPECT_FLOAT_EQ(r->repetition_penalty, 1.2f);
  EXPECT_FLOAT_EQ(r->min_p, 0.05f);
  absl::StatusOr<GenerationRequest> defaults = ParseCompletionRequest(R"({"model": "m", "prompt": "x"})");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->presence_penalty, 0.0f);
  EXPECT_EQ(defaults->frequency_penalty, 0.0f);
  EXPECT_EQ(defaults->repetition_penalty, 1.0f);
  EXPECT_EQ(defaults->min_p, 0.0f);
  EXPECT_TRUE(defaults->add_special_tokens);
}

// Every field Strata does not implement is a 400 naming it, never a 200 that ignored it.
TEST(OpenAiHttp, RefusesWhatItDoesNotImplementNamingTheField) {
  struct Case {
    const char* param;
    const char* field;  // as JSON: "key": value
    const char* message;
  };
  for (const Case& c : {
           Case{"presence_penalty", R"("presence_penalty": 2.5)", "[-2, 2]"},
           Case{"frequency_penalty", R"("frequency_penalty": "a")", "must be a number"},
           Case{"repetition_penalty", R"("repetition_penalty": 0)", "(0, 2]"},
           Case{"min_p", R"("min_p": 1.5)", "[0, 1]"},
           Case{"response_format", R"("response_format": {"type": "json_object"})",
                "output is never constrained to JSON"},
           Case{"response_format", R"("response_format": {"type": "json_schema", "json_schema": {"name": "x"}})",
                "'json_schema'"},
           Case{"response_format", R"("response_format": {"type": "yaml"})", "is unknown"},
           Case{"response_format", R"("response_format": "json")", "must be an object"},
           Case{"logprobs", R"("logprobs": 3)", "must be a boolean"},
           Case{"top_logprobs", R"("top_logprobs": 3)", "'logprobs' must be true"},
           Case{"top_logprobs", R"("logprobs": true, "top_logprobs": 21)", "[0, 20]"},
           Case{"service_tier", R"("service_tier": "flex")", "one tier"},
           Case{"return_tokens_as_token_ids", R"("return_tokens_as_token_ids": true)", "by their text"},
           Case{"priority", R"("priority": 5)", "no priorities"},
           Case{"functions", R"("functions": [{"name": "f"}])", "tool and function calling"},
           Case{"function_call", R"("function_call": "auto")", "tool and function calling"},
           Case{"audio", R"("audio": {"voice": "x"})", "audio output"},
           Case{"prediction", R"("prediction": {"type": "content"})", "predicted outputs"},
           Case{"logit_bias", R"("logit_bias": {"5": 10})", "token biases"},
           Case{"tools", R"("tools": [{"type": "function"}])", "tool and function calling"},
           Case{"tool_choice", R"("tool_choice": "auto")", "tool and function calling"},
           Case{"guided_json", R"("response_format": null, "guided_json": {"type": "object"})", "grammar"},
           Case{"min_tokens", R"("min_tokens": 4)", "ignore_eos"},
           Case{"use_beam_search", R"("use_beam_search": true)", "beam search"},
           Case{"store", R"("store": true)", "stores no completions"},
           Case{"skip_special_tokens", R"("skip_special_tokens": false)", "special tokens"},
           Case{"echo", R"("echo": true)", "/v1/completions field"},
           Case{"add_special_tokens", R"("add_special_tokens": true)", "chat template writes the special tokens"},
       }) {
    const std::string body =
        std::string(R"({"model": "m", "messages": [{"role": "user", "content": "x"}], )") + c.field + "}";
    absl::StatusOr<GenerationRequest> r = ParseChatRequest(body);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(HttpStatusOf(r.status()), 400) << body;
    const Json error = ErrorJson(r.status());
    EXPECT_THAT(error["error"]["message"].get<std::string>(), HasSubstr(c.message)) << body;
    EXPECT_EQ(error["error"]["param"], c.param) << body;
  }
}

TEST(OpenAiHttp, ParsesTokenizeAndDetokenizeRequests) {
  absl::StatusOr<GenerationRequest> text = ParseTokenizeRequest(R"({"model": "m", "prompt": "hi", "add_special_tokens": false})");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->endpoint, Endpoint::kCompletions);
  EXPECT_EQ(text->prompt_text, "hi");
  EXPECT_FALSE(text->add_special_tokens);
  absl::StatusOr<GenerationRequest> chat =
      ParseTokenizeRequest(R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "add_generation_prompt": false})");
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->endpoint, Endpoint::kChat);
  EXPECT_FALSE(chat->add_generation_prompt);
  absl::StatusOr<DetokenizeRequest> ids = ParseDetokenizeRequest(R"({"model": "m", "tokens": [1, 2]})");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(ids->tokens, ElementsAre(1, 2));
  EXPECT_EQ(OpenAiParamOf(ParseTokenizeRequest(R"({"model": "m"})").status()), "prompt");
  EXPECT_EQ(OpenAiParamOf(ParseTokenizeRequest(R"({"prompt": "x"})").status()), "model");
  EXPECT_EQ(OpenAiParamOf(ParseDetokenizeRequest(R"({"model": "m", "tokens": "x"})").status()), "tokens");
  EXPECT_EQ(OpenAiParamOf(ParseDetokenizeRequest(R"({"model": "m", "tokens": [-1]})").status()), "tokens");
}

TEST(OpenAiHttp, SystemFingerprintNamesTheVersionAndTheModel) {
  Sha256Digest a{}, b{};
  b[0] = 0xab;
  EXPECT_EQ(SystemFingerprint(a), "strata-" + std::string(StrataVersion()) + "-0000000000000000");
  EXPECT_EQ(SystemFingerprint(b), "strata-" + std::string(StrataVersion()) + "-ab00000000000000");
  EXPECT_FALSE(StrataVersion().empty());
  ResponseHeader header{"cmpl-1", 1, "m", SystemFingerprint(b)};
  const Choice x{0, "x", "stop"};
  EXPECT_EQ(CompletionJson(header, Endpoint::kChat, {&x, 1}, Usage())["system_fingerprint"], SystemFingerprint(b));
  EXPECT_EQ(ChunkJson(header, Endpoint::kCompletions, Choice{0, "x"}, false, false)["system_fingerprint"],
            SystemFingerprint(b));
}

TEST(OpenAiHttp, ParsesChatMessagesIncludingTextParts) {
  absl::StatusOr<GenerationRequest> r = ParseChatRequest(R"({"model": "m", "messages": [
      {"role": "system", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
      "max_completion_tokens": 4})");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->messages.size(), 2u);
  EXPECT_EQ(r->messages[1].content, "ab");
  EXPECT_EQ(r->max_tokens, 4u);
  EXPECT_EQ(r->endpoint, Endpoint::kChat);
  for (const char* bad : {R"({"model": "m", "messages": []})", R"({"model": "m", "messages": [{"content": "x"}]})",
                          R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
                          R"({"model": "m", "messages": [{"role": "user", "content": [{"type": 5, "text": "x"}]}]})",
                          R"({"model": "m", "messages": [{"role": 7, "content": "x"}]})"}) {
    absl::StatusOr<GenerationRequest> refused = ParseChatRequest(bad);
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_EQ(HttpStatusOf(refused.status()), 400) << bad;
  }
}

TEST(OpenAiHttp, ResponseAndChunkShapes) {
  const ResponseHeader header{"cmpl-1", 1700000000, "m"};
  Usage usage;
  usage.prompt_tokens = 10;
  usage.completion_tokens = 3;
  usage.cached_tokens = 8;
  usage.worker_id = "w0";
  usage.cached_tokens_gpu = 8;
  usage.prefill_tokens = 2;
  usage.ttft_s = 0.25;
  const Choice abc{0, "abc", "length"};
  const Json completion = CompletionJson(header, Endpoint::kCompletions, {&abc, 1}, usage);
  EXPECT_EQ(completion["object"], "text_completion");
  EXPECT_EQ(completion["choices"][0]["text"], "abc");
  EXPECT_EQ(completion["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(completion["usage"]["total_tokens"], 13);
  EXPECT_EQ(completion["usage"]["prompt_tokens_details"]["cached_tokens"], 8);
  EXPECT_EQ(completion["usage"]["strata"]["worker_id"], "w0");
  EXPECT_EQ(completion["usage"]["strata"]["cached_tokens_gpu"], 8);
  EXPECT_EQ(completion["usage"]["strata"]["prefill_tokens"], 2);
  EXPECT_DOUBLE_EQ(completion["usage"]["strata"]["ttft_s"].get<double>(), 0.25);

  const Choice hi{0, "hi", "stop"};
  const Json chat = CompletionJson(header, Endpoint::kChat, {&hi, 1}, usage);
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "hi");

  const Json first = ChunkJson(header, Endpoint::kChat, Choice{}, true, true);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(first.contains("usage") && first["usage"].is_null());
  const Json last = ChunkJson(header, Endpoint::kChat, Choice{0, "", "stop"}, false, false);
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  const Json usage_chunk = UsageChunkJson(header, Endpoint::kCompletions, usage);
  EXPECT_TRUE(usage_chunk["choices"].empty());
  EXPECT_EQ(usage_chunk["usage"]["completion_tokens"], 3);
  EXPECT_EQ(SseEvent(Json{{"a", 1}}), "data: {\"a\":1}\n\n");
}

TEST(ApiKeys, MapKeysToTenantsAndRefuseTheRest) {
  ApiKeys open;
  EXPECT_EQ((*open.Find(""))->tenant, "default");
  EXPECT_EQ((*open.Find("Bearer whatever"))->tenant, "default");

  strata::testing::ScratchDir dir = strata::testing::MakeTempDir("api_keys");
  const std::filesystem::path path = dir.path() / "keys";
  std::ofstream(path) << "# key tenant\nsk-alpha team-a\n\nsk-beta team-b\n";
  absl::StatusOr<ApiKeys> keys = ApiKeys::Load(path);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ((*keys->Find("Bearer sk-alpha"))->tenant, "team-a");
  EXPECT_EQ((*keys->Find("Bearer sk-beta"))->tenant, "team-b");
  for (const char* bad : {"", "sk-alpha", "Bearer ", "Bearer sk-gamma", "Basic sk-alpha"}) {
    absl::StatusOr<const Caller*> tenant = keys->Find(bad);
    ASSERT_FALSE(tenant.ok()) << bad;
    EXPECT_EQ(HttpStatusOf(tenant.status()), 401) << bad;
    EXPECT_EQ(OpenAiCodeOf(tenant.status()), "invalid_api_key") << bad;
  }
  std::ofstream(path) << "sk-alpha team-a\nsk-alpha team-c\n";
  EXPECT_THAT(ApiKeys::Load(path).status().message(), HasSubstr(":2: this key appeared on an earlier line"));
  std::ofstream(path) << "just-a-key\n";
  EXPECT_THAT(ApiKeys::Load(path).status().message(), HasSubstr(":1: expected `key tenant [option=value ...]`"));
}

TEST(ServedModel, PrepareChecksModelTokensAndContext) {
  absl::StatusOr<std::unique_ptr<ServedModel>> model = ServedModel::Load(kModelDir, "");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->name(), "llama3-tiny");
  EXPECT_EQ((*model)->context_tokens(), 8192);

  GenerationRequest request;
  request.model = "other";
  request.prompt_ids = {5, 6};
  absl::StatusOr<PreparedRequest> unknown = (*model)->Prepare(request);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(HttpStatusOf(unknown.status()), 404);
  EXPECT_EQ(OpenAiCodeOf(unknown.status()), "model_not_found");

  request.model = "llama3-tiny";
  absl::StatusOr<PreparedRequest> ids = (*model)->Prepare(request);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(ids->prompt_ids, ElementsAre(5, 6));
  EXPECT_EQ(ids->max_tokens, 16u);

  request.prompt_ids.clear();
  request.prompt_text = "Hello world";
  absl::StatusOr<PreparedRequest> text = (*model)->Prepare(request);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->prompt_ids.front(), 0);  // the tokenizer's template adds <|begin_of_text|>

  request.prompt_text.reset();
  request.prompt_ids = {5, 512};
  EXPECT_THAT((*model)->Prepare(request).status().message(), HasSubstr("token id 512 is outside the vocabulary"));

  request.prompt_ids.assign(8000, 7);
  request.max_tokens = 500;
  absl::StatusOr<PreparedRequest> too_long = (*model)->Prepare(request);
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(HttpStatusOf(too_long.status()), 400);
  EXPECT_EQ(OpenAiCodeOf(too_long.status()), "context_length_exceeded");
  EXPECT_THAT(too_long.status().message(), HasSubstr("maximum context length is 8192 tokens"));

  GenerationRequest chat;
  chat.endpoint = Endpoint::kChat;
  chat.model = "llama3-tiny";
  chat.messages = {{"user", "Hi"}};
  absl::StatusOr<PreparedRequest> chat_prepared = (*model)->Prepare(chat);
  ASSERT_TRUE(chat_prepared.ok()) << chat_prepared.status();
  // Fallback template: BOS once (from the template, not added again), the rest of the context by default.
  EXPECT_EQ(chat_prepared->prompt_ids[0], 0);
  EXPECT_NE(chat_prepared->prompt_ids[1], 0);
  EXPECT_EQ(chat_prepared->max_tokens, 8192u - chat_prepared->prompt_ids.size());
  EXPECT_EQ(*(*model)->RenderChat(chat), "<|begin_of_text|>user: Hi\nassistant:");
}

}  // namespace
}  // namespace strata::frontdoor
