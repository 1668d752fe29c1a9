// TextStream: streamed text equals the whole decode, never splits a character, and stops at stop
// strings (also across token boundaries) without having sent any part of them.
#include "scheduler/frontdoor/text_stream.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace strata::frontdoor {
namespace {

const std::string kTokenizer = std::string(STRATA_TEST_DATA_DIR) + "/models/llama3-tiny/tokenizer.json";

bool ValidUtf8Prefix(const std::string& s) {
  // Every chunk must end on a character boundary: its last lead byte has all its continuation bytes.
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : 4;
    if (i + n > s.size()) return false;
    i += n;
  }
  return true;
}

TEST(TextStream, StreamsTheWholeDecodeInWholeCharacters) {
  absl::StatusOr<model::Tokenizer> tokenizer = model::Tokenizer::FromFile(kTokenizer);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::string text = "naïve café — 日本語 🚀 done";
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text, model::SpecialTokens::kSkip);
  ASSERT_TRUE(ids.ok());
  ASSERT_GT(ids->size(), text.size() / 4);  // byte-level pieces: characters span tokens
  TextStream stream(*tokenizer, {});
  std::string streamed;
  for (int32_t id : *ids) {
    const std::string piece = stream.Push(id);
    EXPECT_TRUE(ValidUtf8Prefix(piece)) << piece;
    streamed += piece;
  }
  streamed += stream.Finish();
  EXPECT_EQ(streamed, text);
}

TEST(TextStream, StopsAtAStopStringSpanningTokensWithoutSendingIt) {
  absl::StatusOr<model::Tokenizer> tokenizer = model::Tokenizer::FromFile(kTokenizer);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  absl::StatusOr<std::vector<int32_t>> ids =
      tokenizer->Encode("alpha beta STOPHERE gamma", model::SpecialTokens::kSkip);
  ASSERT_TRUE(ids.ok());
  TextStream stream(*tokenizer, {"", "STOPHERE", "never"});
  std::string streamed;
  size_t pushed = 0;
  for (int32_t id : *ids) {
    ++pushed;
    streamed += stream.Push(id);
    EXPECT_EQ(streamed.find("STOP"), std::string::npos) << streamed;
    if (stream.stopped()) break;
  }
  EXPECT_TRUE(stream.stopped());
  EXPECT_LT(pushed, ids->size());  // " gamma" never needed
  streamed += stream.Finish();
  EXPECT_EQ(streamed, "alpha beta ");
  EXPECT_EQ(stream.Push((*ids)[0]), "");
}

TEST(TextStream, SkipsSpecialTokens) {
  absl::StatusOr<model::Tokenizer> tokenizer = model::Tokenizer::FromFile(kTokenizer);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  TextStream stream(*tokenizer, {});
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode("hi", model::SpecialTokens::kInclude);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ((*ids)[0], 0);
  std::string out;
  for (int32_t id : *ids) out += stream.Push(id);
  out += stream.Push(1);  // <|end_of_text|>
  out += stream.Finish();
  EXPECT_EQ(out, "hi");
}

}  // namespace
}  // namespace strata::frontdoor
