// The chat-template interpreter's lexer (private to scheduler/frontdoor/): a template cut into text and
// tags with Hugging Face's whitespace control (trim_blocks, lstrip_blocks, `-`/`+` markers), and a tag's
// inside cut into tokens.
#ifndef STRATA_SCHEDULER_FRONTDOOR_JINJA_LEXER_H_
#define STRATA_SCHEDULER_FRONTDOOR_JINJA_LEXER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::frontdoor::jinja {

enum class SegmentKind { kText, kOutput, kStatement };

struct Segment {
  SegmentKind kind;
  std::string body;  // text, or the inside of the tag without its delimiters and `-`/`+` markers
  int line;
};

// Text and `{{ }}` / `{% %}` tags (comments dropped), whitespace control applied. InvalidArgument for a
// tag that is never closed.
absl::StatusOr<std::vector<Segment>> Split(std::string_view source);

enum class TokenKind { kName, kString, kInteger, kFloat, kOperator, kEnd };

struct Token {
  TokenKind kind;
  std::string text;
  int64_t integer = 0;  // kInteger
  double number = 0;    // kFloat
};

// The tokens of a tag's inside, ending with a kEnd token. InvalidArgument for what no token starts with.
absl::StatusOr<std::vector<Token>> Tokenize(std::string_view body, int line);

}  // namespace strata::frontdoor::jinja

#endif  // STRATA_SCHEDULER_FRONTDOOR_JINJA_LEXER_H_
