// What a front-door request asks for and what it reports, independent of HTTP or gRPC, and the errors
// it can meet: absl::Status with the OpenAI error code (and the HTTP status where the code alone does
// not say it) attached as payloads, so one Status carries what both faces need.
#ifndef STRATA_SCHEDULER_FRONTDOOR_REQUEST_H_
#define STRATA_SCHEDULER_FRONTDOOR_REQUEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "scheduler/options.h"

namespace strata::frontdoor {

enum class Endpoint { kCompletions, kChat };

// The most alternatives per token a request may ask for (OpenAI's top_logprobs limit; vLLM's default
// max_logprobs); the worker's limit is the same (worker/engine/logprobs.h).
inline constexpr int kMaxTopLogprobs = 20;

struct ChatMessage {
  std::string role;
  std::string content;
};

struct GenerationRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;
  // Completions: the prompt as text (tokenized with the model's special tokens) or as token ids.
  std::optional<std::string> prompt_text;
  std::vector<int32_t> prompt_ids;
  bool add_special_tokens = true;  // a text prompt: the tokenizer's post-processor (BOS); vLLM's extension
  // Chat: rendered with the model's chat template.
  std::vector<ChatMessage> messages;
  bool add_generation_prompt = true;
  // Unset: 16 for completions, the rest of the context for chat.
  std::optional<uint32_t> max_tokens;
  float temperature = 1.0f;  // OpenAI's default; 0 is greedy
  float top_p = 1.0f;
  uint32_t top_k = 0;        // 0: all
  float min_p = 0.0f;        // 0: off; worker/engine/sampler.h states the math of it and the penalties
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  float repetition_penalty = 1.0f;  // 1: off
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;        // stop strings, matched on the text
  std::vector<int32_t> stop_token_ids;  // extension (vLLM's name)
  bool ignore_eos = false;              // extension (vLLM's name)
  std::string cache_salt;               // narrows KV sharing within the tenant
  std::string user;                     // OpenAI's end-user id; without API keys it narrows sharing too
  bool disable_prefix_cache = false;    // extension: the worker neither reads nor writes cached KV
  bool stream = false;
  bool include_usage = false;           // stream_options.include_usage
  // Log-probabilities (worker/engine/logprobs.h: of the raw logits, before penalties and temperature):
  // -1 off; else each token's, with this many alternatives (completions: `logprobs`; chat: `logprobs:
  // true` and `top_logprobs`), at most 20.
  int top_logprobs = -1;
  bool echo = false;  // completions: the prompt's text before the completion (with logprobs: its tokens')
  uint32_t n = 1;     // choices: independent samples of one prompt (seeds seed, seed + 1, ...)
};

using scheduler::CacheReport;  // scheduler/options.h

// usage, with Strata's extension object `strata`.
struct Usage {
  CacheReport cache_report = CacheReport::kShown;  // kHidden: the cached_* and prefill counts are left out
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
  uint32_t cached_tokens = 0;
  std::string worker_id;
  uint32_t cached_tokens_gpu = 0;
  uint32_t cached_tokens_host = 0;
  uint32_t cached_tokens_kvstore = 0;
  uint32_t prefill_tokens = 0;
  double queue_s = 0;  // the worker's queue wait
  double ttft_s = 0;   // front door: request arrived -> first token
};

// An error as OpenAI states it. `openai_code` is the error's `code` ("model_not_found",
// "context_length_exceeded", ...; empty: null); `param` names the offending field (empty: null);
// `http_status` 0 derives it from the Status code.
absl::Status ApiError(absl::StatusCode code, std::string_view message, std::string_view openai_code = {},
                      std::string_view param = {}, int http_status = 0);

// The HTTP status of an error: its attached status, else by code (InvalidArgument 400, Unauthenticated
// 401, PermissionDenied 403, NotFound 404, ResourceExhausted and Unavailable 503, others 500).
int HttpStatusOf(const absl::Status& status);
// OpenAI's `type` for it: invalid_request_error, authentication_error, permission_error, requests (429,
// as OpenAI's rate limits say), service_unavailable_error, api_error.
std::string_view OpenAiTypeOf(const absl::Status& status);
std::string OpenAiCodeOf(const absl::Status& status);
std::string OpenAiParamOf(const absl::Status& status);

// Seconds a refused caller should wait (HTTP Retry-After, gRPC trailing metadata `retry-after`); 0: none.
absl::Status WithRetryAfter(absl::Status status, int64_t seconds);
int64_t RetryAfterOf(const absl::Status& status);

// The `reason` label of strata_frontdoor_refusals_total for a refused (4xx) request: the one attached by
// WithRefusal, else by HTTP status (invalid_request, invalid_api_key, permission_denied, not_found,
// request_too_large, rate_limit).
absl::Status WithRefusal(absl::Status status, std::string_view reason);
std::string RefusalReasonOf(const absl::Status& status);
std::string_view RefusalReasonOf(int http_status);

}  // namespace strata::frontdoor

#endif  // STRATA_SCHEDULER_FRONTDOOR_REQUEST_H_
