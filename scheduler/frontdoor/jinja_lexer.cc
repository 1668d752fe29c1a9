#include "scheduler/frontdoor/jinja_lexer.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <utility>

#include "scheduler/frontdoor/jinja_ast.h"

namespace strata::frontdoor::jinja {

absl::StatusOr<std::vector<Segment>> Split(std::string_view source) {
  std::vector<Segment> segments;
  std::string text;
  int line = 1;
  int text_line = 1;
  bool strip_next_whitespace = false;  // the previous tag ended with `-`
  bool trim_next_newline = false;      // the previous tag was a block or comment (trim_blocks)
  size_t i = 0;
  auto flush_text = [&] {
    if (!text.empty()) segments.push_back({SegmentKind::kText, text, text_line});
    text.clear();
  };
  while (i < source.size()) {
    const bool tag = source[i] == '{' && i + 1 < source.size() &&
                     (source[i + 1] == '{' || source[i + 1] == '%' || source[i + 1] == '#');
    if (!tag) {
      const char c = source[i];
      if (strip_next_whitespace && std::isspace(static_cast<unsigned char>(c))) {
        if (c == '\n') ++line;
        ++i;
        continue;
      }
      strip_next_whitespace = false;
      if (trim_next_newline) {
        trim_next_newline = false;
        if (c == '\n') {
          ++line;
          ++i;
          continue;
        }
      }
      if (text.empty()) text_line = line;
      text.push_back(c);
      if (c == '\n') ++line;
      ++i;
      continue;
    }
    strip_next_whitespace = false;
    trim_next_newline = false;
    const char opener = source[i + 1];
    const char closer = opener == '{' ? '}' : opener;
    const int tag_line = line;
    size_t body_start = i + 2;
    bool left_minus = false, left_plus = false;
    if (body_start < source.size() && (source[body_start] == '-' || source[body_start] == '+')) {
      (source[body_start] == '-' ? left_minus : left_plus) = true;
      ++body_start;
    }
    // Find the closing delimiter outside string literals.
    size_t j = body_start;
    char quote = 0;
    size_t end = std::string_view::npos;
    while (j + 1 < source.size()) {
      const char c = source[j];
      if (quote != 0) {
        if (c == '\\') ++j;
        else if (c == quote) quote = 0;
      } else if (opener != '#' && (c == '\'' || c == '"')) {
        quote = c;
      } else if (c == closer && source[j + 1] == '}') {
        end = j;
        break;
      }
      ++j;
    }
    if (end == std::string_view::npos) {
      return Error(tag_line, StrCat("'{", std::string(1, opener), "' is never closed"));
    }
    size_t body_end = end;
    bool right_minus = false, right_plus = false;
    if (body_end > body_start && (source[body_end - 1] == '-' || source[body_end - 1] == '+')) {
      (source[body_end - 1] == '-' ? right_minus : right_plus) = true;
      --body_end;
    }
    const std::string_view body = source.substr(body_start, body_end - body_start);
    const bool block = opener != '{';
    // Left side: `{%-` strips every whitespace before; lstrip_blocks strips spaces and tabs back to the
    // line start for blocks and comments (unless `{%+`).
    if (left_minus) {
      while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    } else if (block && !left_plus) {
      size_t k = i;
      while (k > 0 && (source[k - 1] == ' ' || source[k - 1] == '\t')) --k;
      if (k == 0 || source[k - 1] == '\n') {
        size_t strip = i - k;
        for (; strip > 0 && !text.empty() && (text.back() == ' ' || text.back() == '\t'); --strip) text.pop_back();
      }
    }
    for (char c : source.substr(i, end + 2 - i)) {
      if (c == '\n') ++line;
    }
    i = end + 2;
    if (opener != '#') {
      flush_text();
      segments.push_back({opener == '{' ? SegmentKind::kOutput : SegmentKind::kStatement, std::string(body), tag_line});
    }
    if (right_minus) strip_next_whitespace = true;
    else if (block && !right_plus) trim_next_newline = true;
  }
  flush_text();
  return segments;
}

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view body, int line) {
  std::vector<Token> tokens;
  size_t i = 0;
  while (i < body.size()) {
    const char c = body[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < body.size() && (std::isalnum(static_cast<unsigned char>(body[j])) || body[j] == '_')) ++j;
      tokens.push_back({TokenKind::kName, std::string(body.substr(i, j - i))});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < body.size() && (std::isdigit(static_cast<unsigned char>(body[j])) || body[j] == '_')) ++j;
      bool floating = false;
      if (j + 1 < body.size() && body[j] == '.' && std::isdigit(static_cast<unsigned char>(body[j + 1]))) {
        floating = true;
        for (++j; j < body.size() && std::isdigit(static_cast<unsigned char>(body[j])); ++j) {
        }
      }
      if (j < body.size() && (body[j] == 'e' || body[j] == 'E')) {
        size_t k = j + 1;
        if (k < body.size() && (body[k] == '+' || body[k] == '-')) ++k;
        if (k < body.size() && std::isdigit(static_cast<unsigned char>(body[k]))) {
          floating = true;
          for (j = k; j < body.size() && std::isdigit(static_cast<unsigned char>(body[j])); ++j) {
          }
        }
      }
      std::string digits;
      for (char d : body.substr(i, j - i)) {
        if (d != '_') digits.push_back(d);
      }
      Token token{floating ? TokenKind::kFloat : TokenKind::kInteger, std::string(body.substr(i, j - i))};
      errno = 0;
      if (floating) {
        token.number = std::strtod(digits.c_str(), nullptr);
      } else {
        token.integer = std::strtoll(digits.c_str(), nullptr, 10);
        if (errno == ERANGE) return Error(line, StrCat("integer literal ", token.text, " is out of range"));
      }
      tokens.push_back(std::move(token));
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string value;
      size_t j = i + 1;
      while (j < body.size() && body[j] != c) {
        if (body[j] == '\\' && j + 1 < body.size()) {
          const char e = body[++j];
          switch (e) {
            case 'n': value.push_back('\n'); break;
            case 't': value.push_back('\t'); break;
            case 'r': value.push_back('\r'); break;
            case '\\': value.push_back('\\'); break;
            case '\'': value.push_back('\''); break;
            case '"': value.push_back('"'); break;
            default: value.push_back('\\'); value.push_back(e);
          }
          ++j;
        } else {
          value.push_back(body[j++]);
        }
      }
      if (j >= body.size()) return Error(line, "unterminated string literal");
      tokens.push_back({TokenKind::kString, std::move(value)});
      i = j + 1;
    } else {
      static constexpr std::string_view kTwo[] = {"==", "!=", "<=", ">=", "//"};
      std::string op(1, c);
      for (std::string_view two : kTwo) {
        if (body.substr(i, 2) == two) op = std::string(two);
      }
      if (op.size() == 1 && std::string_view("+-*/%~<>()[]{}.,:|=").find(c) == std::string_view::npos) {
        return Error(line, StrCat("unexpected character '", op, "'"));
      }
      tokens.push_back({TokenKind::kOperator, op});
      i += op.size();
    }
  }
  tokens.push_back({TokenKind::kEnd, "end of tag"});
  return tokens;
}

}  // namespace strata::frontdoor::jinja
