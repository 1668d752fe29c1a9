#include "scheduler/frontdoor/logprobs.h"

#include <algorithm>
#include <string>

namespace strata::frontdoor {
namespace {

using Json = nlohmann::json;

// vLLM's floor: a logprob of -inf (a logit of -inf) is not JSON.
constexpr float kLowestLogprob = -9999.0f;

double Shown(float logprob) { return std::max(logprob, kLowestLogprob); }

std::string TokenText(const model::Tokenizer& tokenizer, int32_t id) {
  return tokenizer.Decode({&id, 1}, model::SpecialTokens::kInclude);
}

// Characters (code points) of UTF-8 text, as Python's len() counts them for text_offset.
uint64_t Characters(const std::string& text) {
  return static_cast<uint64_t>(
      std::count_if(text.begin(), text.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

Json Bytes(const std::string& text) {
  Json out = Json::array();
  for (char c : text) out.push_back(static_cast<unsigned char>(c));
  return out;
}

}  // namespace

TokenLogprobs FromProto(int32_t id, const proto::PositionLogprobs& logprobs) {
  TokenLogprobs out;
  out.token = id;
  out.logprob = logprobs.logprob();
  out.top.reserve(logprobs.top_size());
  for (const proto::TokenLogprob& top : logprobs.top()) out.top.emplace_back(top.token_id(), top.logprob());
  return out;
}

Json CompletionLogprobsJson(const model::Tokenizer& tokenizer, absl::Span<const TokenLogprobs> tokens,
                            uint64_t& text_offset) {
  Json texts = Json::array(), logprobs = Json::array(), tops = Json::array(), offsets = Json::array();
  for (const TokenLogprobs& t : tokens) {
    const std::string text = TokenText(tokenizer, t.token);
    texts.push_back(text);
    offsets.push_back(text_offset);
    text_offset += Characters(text);
    if (!t.logprob) {
      logprobs.push_back(nullptr);
      tops.push_back(nullptr);
      continue;
    }
    logprobs.push_back(Shown(*t.logprob));
    Json top = Json::object();
    for (const auto& [id, logprob] : t.top) top[TokenText(tokenizer, id)] = Shown(logprob);
    top[text] = Shown(*t.logprob);
    tops.push_back(std::move(top));
  }
  return Json{{"tokens", std::move(texts)},
              {"token_logprobs", std::move(logprobs)},
              {"top_logprobs", std::move(tops)},
              {"text_offset", std::move(offsets)}};
}

Json ChatLogprobsJson(const model::Tokenizer& tokenizer, absl::Span<const TokenLogprobs> tokens) {
  Json content = Json::array();
  for (const TokenLogprobs& t : tokens) {
    const std::string text = TokenText(tokenizer, t.token);
    Json top = Json::array();
    for (const auto& [id, logprob] : t.top) {
      const std::string alternative = TokenText(tokenizer, id);
      top.push_back(Json{{"token", alternative}, {"logprob", Shown(logprob)}, {"bytes", Bytes(alternative)}});
    }
    content.push_back(Json{{"token", text},
                           {"logprob", t.logprob ? Json(Shown(*t.logprob)) : Json(nullptr)},
                           {"bytes", Bytes(text)},
                           {"top_logprobs", std::move(top)}});
  }
  return Json{{"content", std::move(content)}};
}

}  // namespace strata::frontdoor
