// The OpenAI wire format: request bodies of /v1/completions and /v1/chat/completions parsed into a
// GenerationRequest, and the response bodies, stream chunks and error objects built from results.
// Pure functions on JSON; the HTTP server is frontdoor.h's.
#ifndef STRATA_SCHEDULER_FRONTDOOR_OPENAI_HTTP_H_
#define STRATA_SCHEDULER_FRONTDOOR_OPENAI_HTTP_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/sha256.h"
#include "nlohmann/json.hpp"
#include "scheduler/frontdoor/limits.h"
#include "scheduler/frontdoor/request.h"

namespace strata::frontdoor {

// Parses a request body. InvalidArgument (OpenAI `invalid_request_error`, with `param`) for malformed
// JSON, a missing or mistyped field, or what Strata does not do (several prompts, best_of other than n,
// tools, JSON modes; each refusal's `param` names the field). Unknown fields are ignored, as vLLM does.
absl::StatusOr<GenerationRequest> ParseCompletionRequest(std::string_view body);
absl::StatusOr<GenerationRequest> ParseChatRequest(std::string_view body);
// vLLM's /tokenize: {"model", "prompt" (as /v1/completions, with add_special_tokens)} or {"model",
// "messages" (the chat template, with add_generation_prompt)}.
absl::StatusOr<GenerationRequest> ParseTokenizeRequest(std::string_view body);
// vLLM's /detokenize: {"model", "tokens": [ids]}.
struct DetokenizeRequest {
  std::string model;
  std::vector<int32_t> tokens;
};
absl::StatusOr<DetokenizeRequest> ParseDetokenizeRequest(std::string_view body);
// The HTTP face's whole parse step, a pure function of the body (no server, no model): the body's size
// against limits.max_request_bytes (413, code request_too_large, before any parsing), its shape against
// limits.json (400, before any parsing; the HTTP route also checks it as the bytes arrive), then the
// endpoint's parser. The token limits need the tokenizer: ServedModel::Prepare checks them.
absl::StatusOr<GenerationRequest> ParseRequest(std::string_view body, Endpoint endpoint, const RequestLimits& limits);
// The 413 for a body over `max_request_bytes`.
absl::Status RequestTooLarge(uint64_t max_request_bytes);

// {"error": {"message", "type", "param", "code"}}.
nlohmann::json ErrorJson(const absl::Status& status);

// usage with prompt_tokens_details.cached_tokens and the `strata` extension object; with
// usage.cache_report kHidden, without the cached and prefill counts.
nlohmann::json UsageJson(const Usage& usage);

// What a response or chunk names: its id ("cmpl-..." / "chatcmpl-..."), creation time and model, and
// the system_fingerprint of what answered (left out when empty).
struct ResponseHeader {
  std::string id;
  int64_t created = 0;
  std::string model;
  std::string system_fingerprint;
};

// This build's version (CMake's project version), as /version reports it.
std::string_view StrataVersion();
// OpenAI's system_fingerprint: "strata-VERSION-" and the first 16 hex digits of the model fingerprint
// (the same prefix the workers log), so that it changes when either the weights or Strata do.
std::string SystemFingerprint(const Sha256Digest& model_fingerprint);

// One choice of a response, or its part in a stream chunk. `logprobs`: the endpoint's logprobs object
// (logprobs.h), null when not asked for (or, in a chunk, when this one has no tokens).
struct Choice {
  uint32_t index = 0;
  std::string text;           // completions: text; chat: message.content / delta.content
  std::string finish_reason;  // "stop", "length", "abort"; empty: not finished (chunks only)
  nlohmann::json logprobs = nullptr;
};

// Non-streaming bodies: every choice, in index order, and the usage of them all.
nlohmann::json CompletionJson(const ResponseHeader& header, Endpoint endpoint, absl::Span<const Choice> choices,
                              const Usage& usage);
// One stream chunk of one choice: the choice's text (completions) or delta.content (chat); `first` adds
// the chat delta's role; a non-empty finish_reason ends the choice. `with_null_usage` writes
// "usage": null (OpenAI does so on every chunk when include_usage is on).
nlohmann::json ChunkJson(const ResponseHeader& header, Endpoint endpoint, const Choice& choice, bool first,
                         bool with_null_usage);
// The last chunk of include_usage: no choices, the usage.
nlohmann::json UsageChunkJson(const ResponseHeader& header, Endpoint endpoint, const Usage& usage);

// `data: <json>\n\n`.
std::string SseEvent(const nlohmann::json& json);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

}  // namespace strata::frontdoor

#endif  // STRATA_SCHEDULER_FRONTDOOR_OPENAI_HTTP_H_
