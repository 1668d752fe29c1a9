// Log-probabilities as the front door carries and shows them: the worker's numbers per token (ids), and
// OpenAI's two JSON shapes of them, built with the model's tokenizer: /v1/completions' legacy object
// (tokens, token_logprobs, top_logprobs, text_offset) and /v1/chat/completions' `content` list. The numbers
// are log_softmax of the raw logits (before penalties and temperature, vLLM's default raw_logprobs).
#ifndef STRATA_SCHEDULER_FRONTDOOR_LOGPROBS_H_
#define STRATA_SCHEDULER_FRONTDOOR_LOGPROBS_H_

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "proto/worker.pb.h"
#include "model/tokenizer.h"

namespace strata::frontdoor {

// One position's logprobs: the token there, its logprob (nullopt: none, as for an echoed prompt's first
// token, which has no context) and the most likely tokens, most likely first.
struct TokenLogprobs {
  int32_t token = 0;
  std::optional<float> logprob;
  std::vector<std::pair<int32_t, float>> top;
};

// From the worker's message: `ids[i]` with `logprobs[i]`. REQUIRES: equal sizes.
TokenLogprobs FromProto(int32_t id, const proto::PositionLogprobs& logprobs);

// /v1/completions' legacy `logprobs` object for `tokens`: each token's text (decoded alone, as vLLM does, so a
// token holding part of a character shows U+FFFD), logprob (null where there is none), top_logprobs (a
// {text: logprob} object of the alternatives and the token itself, as OpenAI's "up to logprobs + 1"; null
// where there is none) and text_offset: where its text starts in the choice's text, counted in characters
// from `text_offset`, which is advanced past these tokens. Logprobs below -9999 are shown as -9999 (JSON has
// no -inf), as vLLM does.
nlohmann::json CompletionLogprobsJson(const model::Tokenizer& tokenizer, absl::Span<const TokenLogprobs> tokens,
                                      uint64_t& text_offset);

// /v1/chat/completions' `logprobs` object: {"content": [{token, logprob, bytes, top_logprobs: [{token,
// logprob, bytes}]}]}, the top list holding exactly the alternatives asked for, most likely first; `bytes`
// are the UTF-8 bytes of the token's text.
nlohmann::json ChatLogprobsJson(const model::Tokenizer& tokenizer, absl::Span<const TokenLogprobs> tokens);

}  // namespace strata::frontdoor

#endif  // STRATA_SCHEDULER_FRONTDOOR_LOGPROBS_H_
