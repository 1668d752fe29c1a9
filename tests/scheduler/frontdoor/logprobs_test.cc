// The front door's logprobs objects: OpenAI's legacy completions shape and the chat shape, with the token
// texts of llama3-tiny's tokenizer.
#include "scheduler/frontdoor/logprobs.h"

#include <cmath>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/tokenizer.h"

namespace strata::frontdoor {
namespace {

using Json = nlohmann::json;

class LogprobsJsonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<model::Tokenizer> tokenizer =
        model::Tokenizer::FromFile(std::string(STRATA_TEST_DATA_DIR) + "/models/llama3-tiny/tokenizer.json");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::make_unique<model::Tokenizer>(*std::move(tokenizer));
  }
  std::string Text(int32_t id) const { return tokenizer_->Decode({&id, 1}); }
  int32_t Id(const std::string& text) const { return (*tokenizer_->Encode(text, model::SpecialTokens::kSkip))[0]; }

  std::unique_ptr<model::Tokenizer> tokenizer_;
};

TEST_F(LogprobsJsonTest, CompletionsShapeHasTokensLogprobsTopDictAndCharacterOffsets) {
  // llama3-tiny's vocabulary is small: "H", " w" and "," are tokens of their own.
  const int32_t hello = Id("H"), world = Id(" w"), comma = Id(",");
  ASSERT_EQ(Text(hello), "H");
  ASSERT_EQ(Text(world), " w");
  ASSERT_EQ(Text(comma), ",");
  const std::vector<TokenLogprobs> tokens = {
      {hello, std::nullopt, {}},  // an echoed prompt's first token
      {world, -0.5f, {{comma, -0.25f}, {world, -0.5f}}},
      {comma, -std::numeric_limits<float>::infinity(), {}},
  };
  uint64_t offset = 3;
  const Json json = CompletionLogprobsJson(*tokenizer_, tokens, offset);
  EXPECT_EQ(json["tokens"], Json({"H", " w", ","}));
  EXPECT_TRUE(json["token_logprobs"][0].is_null());
  EXPECT_DOUBLE_EQ(json["token_logprobs"][1].get<double>(), -0.5);
  EXPECT_DOUBLE_EQ(json["token_logprobs"][2].get<double>(), -9999.0);  // -inf is not JSON: vLLM's floor
  EXPECT_TRUE(json["top_logprobs"][0].is_null());
  EXPECT_EQ(json["top_logprobs"][1], Json({{",", -0.25}, {" w", -0.5}}));
  EXPECT_EQ(json["top_logprobs"][2], Json({{",", -9999.0}}));  // the token itself, always
  EXPECT_EQ(json["text_offset"], Json({3, 4, 6}));
  EXPECT_EQ(offset, 7u);
}

TEST_F(LogprobsJsonTest, ChatShapeHasContentWithBytesAndTopListMostLikelyFirst) {
  const int32_t world = Id(" w"), comma = Id(",");
  const std::vector<TokenLogprobs> tokens = {{world, -0.5f, {{comma, -0.25f}, {world, -0.5f}}}};
  const Json json = ChatLogprobsJson(*tokenizer_, tokens);
  ASSERT_EQ(json["content"].size(), 1u);
  const Json& first = json["content"][0];
  EXPECT_EQ(first["token"], " w");
  EXPECT_DOUBLE_EQ(first["logprob"].get<double>(), -0.5);
  EXPECT_EQ(first["bytes"], Json({32, 119}));
  ASSERT_EQ(first["top_logprobs"].size(), 2u);
  EXPECT_EQ(first["top_logprobs"][0]["token"], ",");
  EXPECT_EQ(first["top_logprobs"][0]["bytes"], Json({44}));
  EXPECT_EQ(first["top_logprobs"][1]["token"], " w");
}

TEST_F(LogprobsJsonTest, ATokenHoldingPartOfACharacterShowsTheReplacementCharacter) {
  // "é" is two bytes; in a byte-level BPE vocabulary each byte is a token of its own.
  const std::optional<int32_t> first_byte = tokenizer_->TokenToId("Ã");  // byte 0xC3 in the byte-level alphabet
  ASSERT_TRUE(first_byte.has_value());
  const Json json = ChatLogprobsJson(*tokenizer_, std::vector<TokenLogprobs>{{*first_byte, -1.0f, {}}});
  EXPECT_EQ(json["content"][0]["token"], "\xEF\xBF\xBD");
  EXPECT_EQ(json["content"][0]["bytes"], Json({0xEF, 0xBF, 0xBD}));
}

}  // namespace
}  // namespace strata::frontdoor
