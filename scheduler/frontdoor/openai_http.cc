#include "scheduler/frontdoor/openai_http.h"

#include <limits>
#include <utility>

#include "common/status.h"
#include "common/strings.h"
#include "scheduler/frontdoor/json_shape.h"

namespace strata::frontdoor {
namespace {

using Json = nlohmann::json;

absl::Status Invalid(std::string_view message, std::string_view param) {
  return ApiError(absl::StatusCode::kInvalidArgument, message, {}, param);
}

absl::StatusOr<Json> ParseObject(std::string_view body) {
  Json json = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return Invalid(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
        "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
        {});
  }
  if (!json.is_object()) return Invalid("The request body must be a JSON object.", {});
  return json;
}

bool Present(const Json& json, const char* key) { return json.contains(key) && !json[key].is_null(); }

absl::Status ReadNumber(const Json& json, const char* key, double min, double max, float& out) {
  if (!Present(json, key)) return absl::OkStatus();
  if (!json[key].is_number()) return Invalid(StrCat("'", key, "' must be a number"), key);
  const double value = json[key].get<double>();
  if (!(value >= min && value <= max)) {
    return Invalid(StrCat(value, " is not a valid value for '", key, "': it must be in [", min, ", ", max, "]"), key);
  }
  out = static_cast<float>(value);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<int64_t>> ReadInteger(const Json& json, const char* key, int64_t min, int64_t max) {
  if (!Present(json, key)) return std::optional<int64_t>();
  const Json& value = json[key];
  if (!value.is_number_integer()) return Invalid(StrCat("'", key, "' must be an integer"), key);
  const int64_t v = value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(max)
                        ? max + (max < std::numeric_limits<int64_t>::max() ? 1 : 0)
                        : value.get<int64_t>();
  if (v < min || v > max) return Invalid(StrCat(v, " is not a valid value for '", key, "': it must be in [", min, ", ", max, "]"), key);
  return std::optional<int64_t>(v);
}

absl::Status ReadBool(const Json& json, const char* key, bool& out) {
  if (!Present(json, key)) return absl::OkStatus();
  if (!json[key].is_boolean()) return Invalid(StrCat("'", key, "' must be a boolean"), key);
  out = json[key].get<bool>();
  return absl::OkStatus();
}

absl::Status ReadTokenIds(const Json& array, const char* param, std::vector<int32_t>& out) {
  for (const Json& id : array) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return Invalid(StrCat("'", param, "' must hold token ids (non-negative integers)"), param);
    }
    out.push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  return absl::OkStatus();
}

// A request field that Strata does not implement: refused with a 400 naming it, never ignored, unless it
// holds the one value that asks for nothing (false, or `harmless_value` as compact JSON).
struct Unsupported {
  const char* name;
  const char* why;
  bool harmless_false = false;
  const char* harmless_value = nullptr;
};

constexpr char kNoTools[] = "tool and function calling are not implemented; leave it out";
constexpr char kNoGuided[] =
    "output is never constrained to a grammar, regex, choice or JSON schema here; leave it out";

// OpenAI's fields, then vLLM's extensions that a vLLM user may send (those that change the output).
const Unsupported kUnsupported[] = {
    {"logit_bias", "token biases are not implemented; leave it out", false, "{}"},
    {"suffix", "insertion (a suffix after the completion) is not implemented", false, "\"\""},
    {"tools", kNoTools, false, "[]"},
    {"functions", kNoTools, false, "[]"},
    {"tool_choice", kNoTools, false, "\"none\""},
    {"function_call", kNoTools, false, "\"none\""},
    {"audio", "audio output is not implemented; this server returns text"},
    {"modalities", "this server returns text only", false, "[\"text\"]"},
    {"prediction", "predicted outputs are not implemented; leave it out"},
    {"store", "this server stores no completions", true},
    {"web_search_options", "web search is not implemented; leave it out"},
    {"reasoning_effort", "reasoning effort is not a setting of this server; leave it out"},
    {"guided_json", kNoGuided},
    {"guided_regex", kNoGuided},
    {"guided_choice", kNoGuided},
    {"guided_grammar", kNoGuided},
    {"guided_decoding_backend", kNoGuided},
    {"guided_whitespace_pattern", kNoGuided},
    {"structured_outputs", kNoGuided},
    {"prompt_logprobs", "prompt log-probabilities come with 'echo': true and 'logprobs' on /v1/completions"},
    {"return_tokens_as_token_ids", "logprobs name tokens by their text here", true},
    {"truncate_prompt_tokens", "prompts are never truncated here: send a shorter one"},
    {"logits_processors", "custom logits processors are not implemented; leave it out", false, "[]"},
    {"prompt_embeds", "prompts are text or token ids here, not embeddings"},
    {"priority", "requests have no priorities here (first come, first served)", false, "0"},
    {"length_penalty", "the length penalty belongs to beam search, which is not implemented", false, "1"},
    {"spaces_between_special_tokens", "special tokens are always left out of the text", false, "true"},
    {"verbosity", "verbosity is not a setting of this server; leave it out"},
    {"use_beam_search", "beam search is not implemented", true},
    {"min_tokens", "a minimum number of tokens is not implemented; use ignore_eos", false, "0"},
    {"bad_words", "banned words are not implemented; leave it out", false, "[]"},
    {"allowed_token_ids", "restricting the vocabulary is not implemented; leave it out"},
    {"include_stop_str_in_output", "stop strings are always left out of the output", true},
    {"skip_special_tokens", "special tokens are always left out of the text", false, "true"},
    {"chat_template", "the model's own chat template is used; a request cannot replace it"},
    {"chat_template_kwargs", "the chat template takes no extra arguments here; leave it out", false, "{}"},
    {"continue_final_message", "the last message cannot be continued here (it is answered)", true},
};

// response_format: {"type": "text"} (the default) is honoured; JSON modes are refused, since a client
// that asked for JSON must not get free text with a 200.
absl::Status CheckResponseFormat(const Json& json) {
  if (!Present(json, "response_format")) return absl::OkStatus();
  const Json& format = json["response_format"];
  if (!format.is_object() || !format.contains("type") || !format["type"].is_string()) {
    return Invalid("'response_format' must be an object with a string 'type'", "response_format");
  }
  const std::string type = format["type"].get<std::string>();
  if (type == "text") return absl::OkStatus();
  if (type == "json_object" || type == "json_schema") {
    return Invalid(StrCat("'response_format' of type '", type,
                          "' is not supported by this server: output is never constrained to JSON here; leave "
                          "response_format out or send {\"type\": \"text\"}"),
                   "response_format");
  }
  return Invalid(StrCat("'response_format' of type '", type, "' is unknown: the types are 'text', 'json_object' "
                        "and 'json_schema' (only 'text' is supported here)"),
                 "response_format");
}

// The most choices (n) of one request.
constexpr int64_t kMaxChoices = 128;

// /v1/completions' `logprobs` (an integer: alternatives per token) and `echo`.
absl::Status ParseCompletionLogprobs(const Json& json, GenerationRequest& request) {
  STRATA_ASSIGN_OR_RETURN(std::optional<int64_t> logprobs, ReadInteger(json, "logprobs", 0, kMaxTopLogprobs));
  if (logprobs) request.top_logprobs = static_cast<int>(*logprobs);
  if (Present(json, "top_logprobs")) {
    return Invalid("'top_logprobs' belongs to /v1/chat/completions; here 'logprobs' is the number of alternatives",
                   "top_logprobs");
  }
  return ReadBool(json, "echo", request.echo);
}

// /v1/chat/completions' `logprobs` (a boolean) and `top_logprobs`.
absl::Status ParseChatLogprobs(const Json& json, GenerationRequest& request) {
  bool logprobs = false;
  STRATA_RETURN_IF_ERROR(ReadBool(json, "logprobs", logprobs));
  STRATA_ASSIGN_OR_RETURN(std::optional<int64_t> top, ReadInteger(json, "top_logprobs", 0, kMaxTopLogprobs));
  if (top && !logprobs) return Invalid("'logprobs' must be true when 'top_logprobs' is given", "top_logprobs");
  if (logprobs) request.top_logprobs = top ? static_cast<int>(*top) : 0;
  if (Present(json, "echo") && !(json["echo"].is_boolean() && !json["echo"].get<bool>())) {
    return Invalid("'echo' is not supported by this server on chat completions (it is a /v1/completions field)",
                   "echo");
  }
  return absl::OkStatus();
}

// What both endpoints share: model, sampling, stops, streaming, extensions, and the refusals.
absl::Status ParseCommon(const Json& json, GenerationRequest& request) {
  if (!Present(json, "model")) return Invalid("you must provide a model parameter", "model");
  if (!json["model"].is_string()) return Invalid("'model' must be a string", "model");
  request.model = json["model"].get<std::string>();

  const char* max_key = Present(json, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  STRATA_ASSIGN_OR_RETURN(std::optional<int64_t> max_tokens,
                          ReadInteger(json, max_key, 1, std::numeric_limits<int32_t>::max()));
  if (max_tokens) request.max_tokens = static_cast<uint32_t>(*max_tokens);
  STRATA_RETURN_IF_ERROR(ReadNumber(json, "temperature", 0, 2, request.temperature));
  STRATA_RETURN_IF_ERROR(ReadNumber(json, "top_p", 0, 1, request.top_p));
  if (Present(json, "top_p") && request.top_p <= 0) return Invalid("'top_p' must be in (0, 1]", "top_p");
  STRATA_RETURN_IF_ERROR(ReadNumber(json, "min_p", 0, 1, request.min_p));
  STRATA_RETURN_IF_ERROR(ReadNumber(json, "presence_penalty", -2, 2, request.presence_penalty));
  STRATA_RETURN_IF_ERROR(ReadNumber(json, "frequency_penalty", -2, 2, request.frequency_penalty));
  STRATA_RETURN_IF_ERROR(ReadNumber(json, "repetition_penalty", 0, 2, request.repetition_penalty));
  if (Present(json, "repetition_penalty") && request.repetition_penalty <= 0) {
    return Invalid("'repetition_penalty' must be in (0, 2] (1 is off)", "repetition_penalty");
  }
  STRATA_ASSIGN_OR_RETURN(std::optional<int64_t> top_k, ReadInteger(json, "top_k", -1, 1 << 30));
  if (top_k) request.top_k = *top_k < 0 ? 0 : static_cast<uint32_t>(*top_k);  // vLLM: -1 means all
  if (Present(json, "seed")) {
    if (!json["seed"].is_number_integer()) return Invalid("'seed' must be an integer", "seed");
    request.seed = json["seed"].is_number_unsigned() ? json["seed"].get<uint64_t>()
                                                     : static_cast<uint64_t>(json["seed"].get<int64_t>());
  }
  if (Present(json, "stop")) {
    const Json& stop = json["stop"];
    if (stop.is_string()) {
      request.stop.push_back(stop.get<std::string>());
    } else if (stop.is_array()) {
      for (const Json& s : stop) {
        if (!s.is_string()) return Invalid("'stop' must be a string or an array of strings", "stop");
        request.stop.push_back(s.get<std::string>());
      }
    } else {
      return Invalid("'stop' must be a string or an array of strings", "stop");
    }
  }
  if (Present(json, "stop_token_ids")) {
    if (!json["stop_token_ids"].is_array()) return Invalid("'stop_token_ids' must be an array of token ids", "stop_token_ids");
    STRATA_RETURN_IF_ERROR(ReadTokenIds(json["stop_token_ids"], "stop_token_ids", request.stop_token_ids));
  }
  STRATA_RETURN_IF_ERROR(ReadBool(json, "ignore_eos", request.ignore_eos));
  STRATA_RETURN_IF_ERROR(ReadBool(json, "disable_prefix_cache", request.disable_prefix_cache));
  if (Present(json, "cache_salt")) {
    if (!json["cache_salt"].is_string()) return Invalid("'cache_salt' must be a string", "cache_salt");
    request.cache_salt = json["cache_salt"].get<std::string>();
  }
  if (Present(json, "user")) {
    if (!json["user"].is_string()) return Invalid("'user' must be a string", "user");
    request.user = json["user"].get<std::string>();
  }
  STRATA_RETURN_IF_ERROR(ReadBool(json, "stream", request.stream));
  if (Present(json, "stream_options")) {
    const Json& options = json["stream_options"];
    if (!options.is_object()) return Invalid("'stream_options' must be an object", "stream_options");
    if (!request.stream) return Invalid("'stream_options' is only allowed with 'stream': true", "stream_options");
    STRATA_RETURN_IF_ERROR(ReadBool(options, "include_usage", request.include_usage));
  }
  STRATA_ASSIGN_OR_RETURN(std::optional<int64_t> n, ReadInteger(json, "n", 1, kMaxChoices));
  if (n) request.n = static_cast<uint32_t>(*n);
  // best_of = n returns every candidate, which is n; more candidates than choices need a ranking (by
  // cumulative logprob) that is not implemented.
  STRATA_ASSIGN_OR_RETURN(std::optional<int64_t> best_of, ReadInteger(json, "best_of", 1, kMaxChoices));
  if (best_of && *best_of != static_cast<int64_t>(request.n)) {
    return Invalid(StrCat("'best_of' must equal n (", request.n,
                          ") here: ranking more candidates than are returned is not implemented"),
                   "best_of");
  }
  if (Present(json, "service_tier")) {
    const Json& tier = json["service_tier"];
    if (!tier.is_string() || (tier != "auto" && tier != "default")) {
      return Invalid("'service_tier' must be 'auto' or 'default' here: this server has one tier", "service_tier");
    }
  }
  STRATA_RETURN_IF_ERROR(CheckResponseFormat(json));
  for (const Unsupported& field : kUnsupported) {
    if (!Present(json, field.name)) continue;
    const Json& value = json[field.name];
    const bool harmless = (field.harmless_false && value.is_boolean() && !value.get<bool>()) ||
                          (field.harmless_value != nullptr && value.dump() == field.harmless_value);
    if (!harmless) {
      return Invalid(StrCat("'", field.name, "' is not supported by this server: ", field.why), field.name);
    }
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// A completion's `prompt`, as /v1/completions and /tokenize read it, and add_special_tokens.
absl::Status ParsePrompt(const Json& json, GenerationRequest& request) {
  if (!Present(json, "prompt")) return Invalid("you must provide a prompt", "prompt");
  const Json& prompt = json["prompt"];
  constexpr char kShape[] =
      "'prompt' must be a string, an array of token ids, or an array holding one of those (one prompt per request)";
  if (prompt.is_string()) {
    request.prompt_text = prompt.get<std::string>();
  } else if (prompt.is_array() && !prompt.empty() && prompt[0].is_number()) {
    STRATA_RETURN_IF_ERROR(ReadTokenIds(prompt, "prompt", request.prompt_ids));
  } else if (prompt.is_array() && prompt.size() == 1 && prompt[0].is_string()) {
    request.prompt_text = prompt[0].get<std::string>();
  } else if (prompt.is_array() && prompt.size() == 1 && prompt[0].is_array() && !prompt[0].empty()) {
    STRATA_RETURN_IF_ERROR(ReadTokenIds(prompt[0], "prompt", request.prompt_ids));
  } else if (prompt.is_array() && prompt.size() > 1) {
    return Invalid("batched prompts (an array of several prompts) are not supported: send one request per prompt",
                   "prompt");
  } else {
    return Invalid(kShape, "prompt");
  }
  if (!request.prompt_text && request.prompt_ids.empty()) return Invalid(kShape, "prompt");
  if (request.prompt_text && request.prompt_text->empty()) return Invalid("'prompt' must not be empty", "prompt");
  return ReadBool(json, "add_special_tokens", request.add_special_tokens);
}

// A chat's `messages` and add_generation_prompt, as /v1/chat/completions and /tokenize read them.
absl::Status ParseMessages(const Json& json, GenerationRequest& request) {
  bool add_special_tokens = false;
  STRATA_RETURN_IF_ERROR(ReadBool(json, "add_special_tokens", add_special_tokens));
  if (add_special_tokens) {
    return Invalid("'add_special_tokens' must be false for messages: the chat template writes the special tokens",
                   "add_special_tokens");
  }
  if (!Present(json, "messages") || !json["messages"].is_array() || json["messages"].empty()) {
    return Invalid("'messages' must be a non-empty array of {role, content}", "messages");
  }
  for (size_t i = 0; i < json["messages"].size(); ++i) {
    const Json& m = json["messages"][i];
    const std::string param = StrCat("messages[", i, "]");
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return Invalid(StrCat(param, " must be an object with a string 'role'"), param);
    }
    ChatMessage message;
    message.role = m["role"].get<std::string>();
    if (m.contains("content") && m["content"].is_string()) {
      message.content = m["content"].get<std::string>();
    } else if (m.contains("content") && m["content"].is_array()) {
      for (const Json& part : m["content"]) {
        if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          return Invalid(StrCat(param, ".content: only parts of type 'text' are supported"), StrCat(param, ".content"));
        }
        message.content += part["text"].get<std::string>();
      }
    } else if (!(m.contains("content") && m["content"].is_null() && message.role == "assistant")) {
      return Invalid(StrCat(param, ".content must be a string or an array of text parts"), StrCat(param, ".content"));
    }
    request.messages.push_back(std::move(message));
  }
  return ReadBool(json, "add_generation_prompt", request.add_generation_prompt);
}

absl::Status ParseModel(const Json& json, std::string& model) {
  if (!Present(json, "model")) return Invalid("you must provide a model parameter", "model");
  if (!json["model"].is_string()) return Invalid("'model' must be a string", "model");
  model = json["model"].get<std::string>();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GenerationRequest> ParseCompletionRequest(std::string_view body) {
  STRATA_ASSIGN_OR_RETURN(Json json, ParseObject(body));
  GenerationRequest request;
  request.endpoint = Endpoint::kCompletions;
  STRATA_RETURN_IF_ERROR(ParseCommon(json, request));
  STRATA_RETURN_IF_ERROR(ParseCompletionLogprobs(json, request));
  STRATA_RETURN_IF_ERROR(ParsePrompt(json, request));
  return request;
}

absl::StatusOr<GenerationRequest> ParseChatRequest(std::string_view body) {
  STRATA_ASSIGN_OR_RETURN(Json json, ParseObject(body));
  GenerationRequest request;
  request.endpoint = Endpoint::kChat;
  STRATA_RETURN_IF_ERROR(ParseCommon(json, request));
  STRATA_RETURN_IF_ERROR(ParseChatLogprobs(json, request));
  STRATA_RETURN_IF_ERROR(ParseMessages(json, request));
  return request;
}

absl::StatusOr<GenerationRequest> ParseTokenizeRequest(std::string_view body) {
  STRATA_ASSIGN_OR_RETURN(Json json, ParseObject(body));
  GenerationRequest request;
  STRATA_RETURN_IF_ERROR(ParseModel(json, request.model));
  if (Present(json, "messages")) {
    request.endpoint = Endpoint::kChat;
    STRATA_RETURN_IF_ERROR(ParseMessages(json, request));
  } else {
    STRATA_RETURN_IF_ERROR(ParsePrompt(json, request));
  }
  return request;
}

absl::StatusOr<DetokenizeRequest> ParseDetokenizeRequest(std::string_view body) {
  STRATA_ASSIGN_OR_RETURN(Json json, ParseObject(body));
  DetokenizeRequest request;
  STRATA_RETURN_IF_ERROR(ParseModel(json, request.model));
  if (!Present(json, "tokens") || !json["tokens"].is_array()) {
    return Invalid("'tokens' must be an array of token ids", "tokens");
  }
  STRATA_RETURN_IF_ERROR(ReadTokenIds(json["tokens"], "tokens", request.tokens));
  return request;
}

std::string_view StrataVersion() { return STRATA_VERSION; }

std::string SystemFingerprint(const Sha256Digest& model_fingerprint) {
  return StrCat("strata-", StrataVersion(), "-", ToHex(model_fingerprint).substr(0, 16));
}

absl::Status RequestTooLarge(uint64_t max_request_bytes) {
  return ApiError(absl::StatusCode::kInvalidArgument,
                  StrCat("The request body is larger than this server accepts (", max_request_bytes,
                         " bytes). Send a shorter prompt, or token ids instead of text."),
                  "request_too_large", {}, 413);
}

absl::StatusOr<GenerationRequest> ParseRequest(std::string_view body, Endpoint endpoint, const RequestLimits& limits) {
  if (limits.max_request_bytes > 0 && body.size() > limits.max_request_bytes) {
    return RequestTooLarge(limits.max_request_bytes);
  }
  STRATA_RETURN_IF_ERROR(CheckJsonShape(body, limits.json));
  return endpoint == Endpoint::kChat ? ParseChatRequest(body) : ParseCompletionRequest(body);
}

Json ErrorJson(const absl::Status& status) {
  const std::string code = OpenAiCodeOf(status);
  const std::string param = OpenAiParamOf(status);
  return Json{{"error",
               {{"message", std::string(status.message())},
                {"type", std::string(OpenAiTypeOf(status))},
                {"param", param.empty() ? Json(nullptr) : Json(param)},
                {"code", code.empty() ? Json(nullptr) : Json(code)}}}};
}

Json UsageJson(const Usage& usage) {
  Json out{{"prompt_tokens", usage.prompt_tokens},
           {"completion_tokens", usage.completion_tokens},
           {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
  Json strata{{"worker_id", usage.worker_id}, {"queue_s", usage.queue_s}, {"ttft_s", usage.ttft_s}};
  if (usage.cache_report == CacheReport::kShown) {
    out["prompt_tokens_details"] = {{"cached_tokens", usage.cached_tokens}};
    strata["cached_tokens_gpu"] = usage.cached_tokens_gpu;
    strata["cached_tokens_host"] = usage.cached_tokens_host;
    strata["cached_tokens_kvstore"] = usage.cached_tokens_kvstore;
    strata["prefill_tokens"] = usage.prefill_tokens;
  }
  out["strata"] = std::move(strata);
  return out;
}

namespace {

Json Envelope(const ResponseHeader& header, const char* object) {
  Json out{{"id", header.id}, {"object", object}, {"created", header.created}, {"model", header.model}};
  if (!header.system_fingerprint.empty()) out["system_fingerprint"] = header.system_fingerprint;
  return out;
}

Json FinishReason(std::string_view finish_reason) {
  return finish_reason.empty() ? Json(nullptr) : Json(std::string(finish_reason));
}

}  // namespace

Json CompletionJson(const ResponseHeader& header, Endpoint endpoint, absl::Span<const Choice> choices,
                    const Usage& usage) {
  const bool chat = endpoint == Endpoint::kChat;
  Json out = Envelope(header, chat ? "chat.completion" : "text_completion");
  Json list = Json::array();
  for (const Choice& choice : choices) {
    Json c{{"index", choice.index}};
    if (chat) {
      c["message"] = {{"role", "assistant"}, {"content", choice.text}};
    } else {
      c["text"] = choice.text;
    }
    c["logprobs"] = choice.logprobs;
    c["finish_reason"] = FinishReason(choice.finish_reason);
    list.push_back(std::move(c));
  }
  out["choices"] = std::move(list);
  out["usage"] = UsageJson(usage);
  return out;
}

Json ChunkJson(const ResponseHeader& header, Endpoint endpoint, const Choice& choice, bool first,
               bool with_null_usage) {
  Json out;
  Json c{{"index", choice.index}};
  if (endpoint == Endpoint::kChat) {
    out = Envelope(header, "chat.completion.chunk");
    Json delta = Json::object();
    if (first) delta["role"] = "assistant";
    if (!choice.text.empty() || (first && choice.finish_reason.empty())) delta["content"] = choice.text;
    c["delta"] = std::move(delta);
  } else {
    out = Envelope(header, "text_completion");
    c["text"] = choice.text;
  }
  c["logprobs"] = choice.logprobs;
  c["finish_reason"] = FinishReason(choice.finish_reason);
  out["choices"] = Json::array({std::move(c)});
  if (with_null_usage) out["usage"] = nullptr;
  return out;
}

Json UsageChunkJson(const ResponseHeader& header, Endpoint endpoint, const Usage& usage) {
  Json out = Envelope(header, endpoint == Endpoint::kChat ? "chat.completion.chunk" : "text_completion");
  out["choices"] = Json::array();
  out["usage"] = UsageJson(usage);
  return out;
}

std::string SseEvent(const Json& json) {
  // Invalid UTF-8 (never produced by the decoder, but a client's echo could be) is replaced, not thrown.
  return StrCat("data: ", json.dump(-1, ' ', false, Json::error_handler_t::replace), "\n\n");
}

}  // namespace strata::frontdoor
