// The `added_tokens` of a tokenizer.json: strings that are cut out of the text before the model sees it
// and map straight to one id (special tokens such as "<|end_of_text|>", and user-added words).
#ifndef STRATA_MODEL_ADDED_TOKENS_H_
#define STRATA_MODEL_ADDED_TOKENS_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace strata::model {

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;      // left out by Decode(..., SpecialTokens::kSkip)
  bool lstrip = false;       // the match also takes the whitespace on its left
  bool rstrip = false;       // the match also takes the whitespace on its right
  bool single_word = false;  // only matches where neither neighbour is a word character (regex \w)
  bool normalized = false;   // matched in the normalized text rather than the raw text
};

// A run of text between added tokens (id < 0), or one added token (its id; `text` is what it matched).
struct TextSegment {
  std::string_view text;
  int32_t id = -1;
};

// Finds added tokens in text: leftmost-longest, the semantics of Hugging Face `tokenizers`
// (aho-corasick MatchKind::LeftmostLongest plus the lstrip / rstrip / single_word rules).
// Immutable after construction; thread-safe.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // `tokens` are the tokens to look for, with `content` as it appears in the text to search.
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);

  bool empty() const { return tokens_.empty(); }

  // Appends to `segments` the split of `text`: text runs (never empty) and tokens, in order. Their
  // concatenation is `text`; whitespace stripped by lstrip/rstrip belongs to the token's segment.
  void Split(std::string_view text, std::vector<TextSegment>& segments) const;

 private:
  std::vector<AddedToken> tokens_;
  // Candidate tokens by first byte, longest first, as indices into tokens_.
  std::array<std::vector<size_t>, 256> by_first_byte_;
};

}  // namespace strata::model

#endif  // STRATA_MODEL_ADDED_TOKENS_H_
