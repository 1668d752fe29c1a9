#include "scheduler/frontdoor/chat_template.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include "common/status.h"
#include "common/strings.h"

namespace strata::frontdoor {
namespace {

using Json = nlohmann::json;

// Jinja's Undefined: a discarded json value (never produced by parsing real data).
Json Undefined() { return Json(Json::value_t::discarded); }
bool IsUndefined(const Json& value) { return value.is_discarded(); }

absl::Status Error(int line, std::string_view message) {
  return absl::InvalidArgumentError(StrCat("chat template: line ", line, ": ", message));
}

// ---------------------------------------------------------------------------------------------------
// Segments: the template cut into text and tags, with Hugging Face's whitespace control applied.

enum class SegmentKind { kText, kOutput, kStatement };

struct Segment {
  SegmentKind kind;
  std::string body;  // text, or the inside of the tag without its delimiters and `-`/`+` markers
  int line;
};

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
    if (body_start < source.size() && source[body_start] == '-') left_minus = true, ++body_start;
    else if (body_start < source.size() && source[body_start] == '+') left_plus = true, ++body_start;
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
    if (body_end > body_start && source[body_end - 1] == '-') right_minus = true, --body_end;
    else if (body_end > body_start && source[body_end - 1] == '+') right_plus = true, --body_end;
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
        while (strip > 0 && !text.empty() && (text.back() == ' ' || text.back() == '\t')) text.pop_back(), --strip;
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

// ---------------------------------------------------------------------------------------------------
// Expression tokens.

enum class TokenKind { kName, kString, kInteger, kOperator, kEnd };

struct Token {
  TokenKind kind;
  std::string text;
  int64_t integer = 0;
};

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
      int64_t value = 0;
      while (j < body.size() && std::isdigit(static_cast<unsigned char>(body[j]))) value = value * 10 + (body[j++] - '0');
      if (j < body.size() && body[j] == '.') return Error(line, "floating-point literals are not supported");
      tokens.push_back({TokenKind::kInteger, std::string(body.substr(i, j - i)), value});
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
      if (op.size() == 1 && std::string_view("+-*/%~<>()[].,:|=").find(c) == std::string_view::npos) {
        return Error(line, StrCat("unexpected character '", op, "'"));
      }
      tokens.push_back({TokenKind::kOperator, op});
      i += op.size();
    }
  }
  tokens.push_back({TokenKind::kEnd, "end of tag"});
  return tokens;
}

// ---------------------------------------------------------------------------------------------------
// The syntax tree.

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

// kUnsupported: a filter, function or method call this interpreter lacks. It parses (so a template that
// uses one only in a branch it never takes, e.g. for tools, still runs) and fails when evaluated.
enum class ExprKind {
  kLiteral, kName, kAttr, kItem, kSlice, kCall, kFilter, kTest, kNot, kNeg, kBinary, kIf, kList, kUnsupported
};

struct Expr {
  ExprKind kind;
  int line = 0;
  Json literal;              // kLiteral
  std::string name;          // kName, kAttr (attribute), kCall/kFilter/kTest (callee), kBinary (operator)
  bool negated = false;      // kTest: `is not`
  std::vector<ExprPtr> args; // operands: kAttr [object], kItem [object, index], kSlice [object, from?, to?], ...
  std::vector<bool> present; // kSlice: which bounds were written
};

struct Node;
using Body = std::vector<Node>;

enum class NodeKind { kText, kOutput, kIf, kFor, kSet };

struct Node {
  NodeKind kind;
  int line = 0;
  std::string text;                                  // kText; kSet: name
  std::vector<std::string> targets;                  // kFor: the loop variable(s)
  ExprPtr expr;                                      // kOutput, kFor (iterable), kSet (value)
  std::vector<std::pair<ExprPtr, Body>> branches;    // kIf: (condition, body); kFor: one (null, body)
  Body else_body;                                    // kIf, kFor
};

constexpr std::string_view kFilters[] = {"trim", "length", "count", "upper", "lower", "string", "first", "last",
                                         "items", "join"};
constexpr std::string_view kTests[] = {"defined", "undefined", "none", "string", "number", "mapping",
                                       "iterable", "sequence", "integer", "boolean"};
constexpr std::string_view kFunctions[] = {"raise_exception", "range"};

bool In(std::string_view name, const auto& list) { return std::find(std::begin(list), std::end(list), name) != std::end(list); }

class ExprParser {
 public:
  ExprParser(std::vector<Token> tokens, int line) : tokens_(std::move(tokens)), line_(line) {}

  absl::StatusOr<ExprPtr> ParseExpression() { return ParseConditional(); }
  bool AtEnd() const { return Peek().kind == TokenKind::kEnd; }
  const Token& Peek(size_t ahead = 0) const { return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)]; }
  bool Accept(std::string_view op) {
    if ((Peek().kind == TokenKind::kOperator || Peek().kind == TokenKind::kName) && Peek().text == op) {
      ++pos_;
      return true;
    }
    return false;
  }
  absl::StatusOr<std::string> Name() {
    if (Peek().kind != TokenKind::kName) return Error(line_, StrCat("expected a name, found '", Peek().text, "'"));
    return tokens_[pos_++].text;
  }
  absl::Status Expect(std::string_view op) {
    if (!Accept(op)) return Error(line_, StrCat("expected '", op, "', found '", Peek().text, "'"));
    return absl::OkStatus();
  }

 private:
  ExprPtr Make(ExprKind kind) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line_;
    return e;
  }
  ExprPtr Binary(std::string op, ExprPtr left, ExprPtr right) {
    ExprPtr e = Make(ExprKind::kBinary);
    e->name = std::move(op);
    e->args.push_back(std::move(left));
    e->args.push_back(std::move(right));
    return e;
  }

  // The arguments after '(' up to ')', positional or `name=value` (names are dropped: only calls that
  // fail when evaluated take keywords).
  absl::StatusOr<std::vector<ExprPtr>> ParseArguments() {
    std::vector<ExprPtr> args;
    while (!Accept(")")) {
      if (!args.empty()) STRATA_RETURN_IF_ERROR(Expect(","));
      if (Peek().kind == TokenKind::kName && Peek(1).kind == TokenKind::kOperator && Peek(1).text == "=") pos_ += 2;
      STRATA_ASSIGN_OR_RETURN(ExprPtr arg, ParseExpression());
      args.push_back(std::move(arg));
      if (AtEnd()) return Error(line_, "missing ')'");
    }
    return args;
  }
  ExprPtr Unsupported(std::string what, std::vector<ExprPtr> args) {
    ExprPtr e = Make(ExprKind::kUnsupported);
    e->name = std::move(what);
    e->args = std::move(args);
    return e;
  }

  absl::StatusOr<ExprPtr> ParseConditional() {
    STRATA_ASSIGN_OR_RETURN(ExprPtr value, ParseOr());
    if (!Accept("if")) return value;
    STRATA_ASSIGN_OR_RETURN(ExprPtr condition, ParseOr());
    ExprPtr otherwise;
    if (Accept("else")) {
      STRATA_ASSIGN_OR_RETURN(otherwise, ParseConditional());
    } else {
      otherwise = Make(ExprKind::kLiteral);
      otherwise->literal = Undefined();
    }
    ExprPtr e = Make(ExprKind::kIf);
    e->args.push_back(std::move(condition));
    e->args.push_back(std::move(value));
    e->args.push_back(std::move(otherwise));
    return e;
  }
  absl::StatusOr<ExprPtr> ParseOr() {
    STRATA_ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (Accept("or")) {
      STRATA_ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      left = Binary("or", std::move(left), std::move(right));
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseAnd() {
    STRATA_ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (Accept("and")) {
      STRATA_ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      left = Binary("and", std::move(left), std::move(right));
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseNot() {
    if (Accept("not")) {
      STRATA_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      ExprPtr e = Make(ExprKind::kNot);
      e->args.push_back(std::move(operand));
      return e;
    }
    return ParseComparison();
  }
  absl::StatusOr<ExprPtr> ParseComparison() {
    STRATA_ASSIGN_OR_RETURN(ExprPtr left, ParseAdditive());
    while (true) {
      std::string op;
      if (Peek().kind == TokenKind::kOperator &&
          (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" || Peek().text == ">" ||
           Peek().text == "<=" || Peek().text == ">=")) {
        op = tokens_[pos_++].text;
      } else if (Accept("in")) {
        op = "in";
      } else if (Peek().kind == TokenKind::kName && Peek().text == "not" && Peek(1).text == "in") {
        pos_ += 2;
        op = "not in";
      } else if (Accept("is")) {
        ExprPtr e = Make(ExprKind::kTest);
        e->negated = Accept("not");
        STRATA_ASSIGN_OR_RETURN(e->name, Name());
        e->args.push_back(std::move(left));
        left = In(e->name, kTests) ? std::move(e) : Unsupported(StrCat("test 'is ", e->name, "'"), std::move(e->args));
        continue;
      } else {
        return left;
      }
      STRATA_ASSIGN_OR_RETURN(ExprPtr right, ParseAdditive());
      left = Binary(op, std::move(left), std::move(right));
    }
  }
  absl::StatusOr<ExprPtr> ParseAdditive() {
    STRATA_ASSIGN_OR_RETURN(ExprPtr left, ParseMultiplicative());
    while (Peek().kind == TokenKind::kOperator && (Peek().text == "+" || Peek().text == "-" || Peek().text == "~")) {
      std::string op = tokens_[pos_++].text;
      STRATA_ASSIGN_OR_RETURN(ExprPtr right, ParseMultiplicative());
      left = Binary(op, std::move(left), std::move(right));
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseMultiplicative() {
    STRATA_ASSIGN_OR_RETURN(ExprPtr left, ParseUnary());
    while (Peek().kind == TokenKind::kOperator &&
           (Peek().text == "*" || Peek().text == "/" || Peek().text == "//" || Peek().text == "%")) {
      std::string op = tokens_[pos_++].text;
      STRATA_ASSIGN_OR_RETURN(ExprPtr right, ParseUnary());
      left = Binary(op, std::move(left), std::move(right));
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseUnary() {
    if (Peek().kind == TokenKind::kOperator && Peek().text == "-") {
      ++pos_;
      STRATA_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary());
      ExprPtr e = Make(ExprKind::kNeg);
      e->args.push_back(std::move(operand));
      return e;
    }
    return ParsePostfix();
  }
  absl::StatusOr<ExprPtr> ParsePostfix() {
    STRATA_ASSIGN_OR_RETURN(ExprPtr e, ParsePrimary());
    while (true) {
      if (Accept(".")) {
        ExprPtr attr = Make(ExprKind::kAttr);
        STRATA_ASSIGN_OR_RETURN(attr->name, Name());
        if (Accept("(")) {
          STRATA_ASSIGN_OR_RETURN(std::vector<ExprPtr> args, ParseArguments());
          e = Unsupported(StrCat("method call '.", attr->name, "()' (use a filter)"), std::move(args));
          continue;
        }
        attr->args.push_back(std::move(e));
        e = std::move(attr);
      } else if (Accept("[")) {
        ExprPtr from, to;
        bool slice = false;
        if (!(Peek().text == ":")) {
          STRATA_ASSIGN_OR_RETURN(from, ParseExpression());
        }
        if (Accept(":")) {
          slice = true;
          if (!(Peek().text == "]")) {
            STRATA_ASSIGN_OR_RETURN(to, ParseExpression());
          }
        }
        STRATA_RETURN_IF_ERROR(Expect("]"));
        ExprPtr item = Make(slice ? ExprKind::kSlice : ExprKind::kItem);
        item->args.push_back(std::move(e));
        item->present = {from != nullptr, to != nullptr};
        if (from) item->args.push_back(std::move(from));
        if (to) item->args.push_back(std::move(to));
        if (!slice && item->args.size() != 2) return Error(line_, "empty subscript");
        e = std::move(item);
      } else if (Peek().kind == TokenKind::kOperator && Peek().text == "|") {
        ++pos_;
        ExprPtr filter = Make(ExprKind::kFilter);
        STRATA_ASSIGN_OR_RETURN(filter->name, Name());
        std::vector<ExprPtr> args;
        const bool called = Accept("(");
        if (called) {
          STRATA_ASSIGN_OR_RETURN(args, ParseArguments());
        }
        const bool takes_argument = filter->name == "join";
        if (!In(filter->name, kFilters) || (called && !takes_argument) || args.size() > (takes_argument ? 1u : 0u)) {
          args.insert(args.begin(), std::move(e));
          e = Unsupported(StrCat("filter '", filter->name, called ? "(...)'" : "'"), std::move(args));
          continue;
        }
        filter->args.push_back(std::move(e));
        for (ExprPtr& arg : args) filter->args.push_back(std::move(arg));
        e = std::move(filter);
      } else if (Peek().kind == TokenKind::kOperator && Peek().text == "(") {
        return Error(line_, "only raise_exception() and range() can be called");
      } else {
        return e;
      }
    }
  }
  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token token = Peek();
    if (token.kind == TokenKind::kString) {
      ++pos_;
      ExprPtr e = Make(ExprKind::kLiteral);
      e->literal = token.text;
      // Adjacent literals concatenate, as in Python.
      while (Peek().kind == TokenKind::kString) e->literal = e->literal.get<std::string>() + tokens_[pos_++].text;
      return e;
    }
    if (token.kind == TokenKind::kInteger) {
      ++pos_;
      ExprPtr e = Make(ExprKind::kLiteral);
      e->literal = token.integer;
      return e;
    }
    if (token.kind == TokenKind::kOperator && token.text == "(") {
      ++pos_;
      STRATA_ASSIGN_OR_RETURN(ExprPtr e, ParseExpression());
      if (Peek().text == ",") return Error(line_, "tuples are not supported");
      STRATA_RETURN_IF_ERROR(Expect(")"));
      return e;
    }
    if (token.kind == TokenKind::kOperator && token.text == "[") {
      ++pos_;
      ExprPtr e = Make(ExprKind::kList);
      while (!Accept("]")) {
        if (!e->args.empty()) STRATA_RETURN_IF_ERROR(Expect(","));
        if (Accept("]")) break;
        STRATA_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
        e->args.push_back(std::move(item));
      }
      return e;
    }
    if (token.kind == TokenKind::kName) {
      ++pos_;
      if (token.text == "true" || token.text == "True" || token.text == "false" || token.text == "False") {
        ExprPtr e = Make(ExprKind::kLiteral);
        e->literal = token.text == "true" || token.text == "True";
        return e;
      }
      if (token.text == "none" || token.text == "None") {
        ExprPtr e = Make(ExprKind::kLiteral);
        e->literal = nullptr;
        return e;
      }
      if (Accept("(")) {
        STRATA_ASSIGN_OR_RETURN(std::vector<ExprPtr> args, ParseArguments());
        if (!In(token.text, kFunctions) || args.size() != 1) {
          return Unsupported(StrCat("function '", token.text, "()'", In(token.text, kFunctions) ? " with these arguments" : ""),
                             std::move(args));
        }
        ExprPtr e = Make(ExprKind::kCall);
        e->name = token.text;
        e->args = std::move(args);
        return e;
      }
      ExprPtr e = Make(ExprKind::kName);
      e->name = token.text;
      return e;
    }
    return Error(line_, StrCat("unexpected '", token.text, "' in an expression"));
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int line_;
};

absl::StatusOr<ExprPtr> ParseWholeExpression(std::string_view body, int line) {
  STRATA_ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenize(body, line));
  ExprParser parser(std::move(tokens), line);
  STRATA_ASSIGN_OR_RETURN(ExprPtr e, parser.ParseExpression());
  if (!parser.AtEnd()) return Error(line, StrCat("unexpected '", parser.Peek().text, "' after an expression"));
  return e;
}

// Statements: a recursive descent over the segments.
class BodyParser {
 public:
  explicit BodyParser(std::vector<Segment> segments) : segments_(std::move(segments)) {}

  // Parses until one of `terminators` (a statement keyword) or the end; returns the keyword met ("" at
  // the end) and leaves the parser on the terminating segment's remaining tokens.
  absl::StatusOr<std::string> ParseBody(Body& body, std::initializer_list<std::string_view> terminators,
                                        std::optional<ExprParser>& rest) {
    while (pos_ < segments_.size()) {
      const Segment& segment = segments_[pos_++];
      if (segment.kind == SegmentKind::kText) {
        body.push_back(Node{NodeKind::kText, segment.line, segment.body});
        continue;
      }
      if (segment.kind == SegmentKind::kOutput) {
        STRATA_ASSIGN_OR_RETURN(ExprPtr e, ParseWholeExpression(segment.body, segment.line));
        Node node{NodeKind::kOutput, segment.line};
        node.expr = std::move(e);
        body.push_back(std::move(node));
        continue;
      }
      STRATA_ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenize(segment.body, segment.line));
      ExprParser parser(std::move(tokens), segment.line);
      if (parser.Peek().kind != TokenKind::kName) return Error(segment.line, "a statement must start with a keyword");
      const std::string keyword = parser.Peek().text;
      if (std::find(terminators.begin(), terminators.end(), keyword) != terminators.end()) {
        parser.Accept(keyword);
        rest.emplace(std::move(parser));
        return keyword;
      }
      parser.Accept(keyword);
      if (keyword == "if") {
        STRATA_RETURN_IF_ERROR(ParseIf(parser, segment.line, body));
      } else if (keyword == "for") {
        STRATA_RETURN_IF_ERROR(ParseFor(parser, segment.line, body));
      } else if (keyword == "set") {
        Node node{NodeKind::kSet, segment.line};
        STRATA_ASSIGN_OR_RETURN(node.text, parser.Name());
        if (parser.Peek().text == "." || parser.Peek().text == ",") {
          return Error(segment.line, "only '{% set name = value %}' is supported (no attributes, tuples or namespace())");
        }
        if (parser.AtEnd()) return Error(segment.line, "block '{% set %}...{% endset %}' is not supported");
        STRATA_RETURN_IF_ERROR(parser.Expect("="));
        STRATA_ASSIGN_OR_RETURN(node.expr, parser.ParseExpression());
        if (!parser.AtEnd()) return Error(segment.line, StrCat("unexpected '", parser.Peek().text, "'"));
        body.push_back(std::move(node));
      } else if (keyword == "endif" || keyword == "endfor" || keyword == "elif" || keyword == "else") {
        return Error(segment.line, StrCat("'{% ", keyword, " %}' without its opening statement"));
      } else {
        return Error(segment.line, StrCat("statement '{% ", keyword, " %}' is not supported (for, if, set are)"));
      }
    }
    if (terminators.size() != 0) {
      return absl::InvalidArgumentError(
          StrCat("chat template: missing '{% ", *terminators.begin(), " %}' (or its block end) at the end"));
    }
    return std::string();
  }

 private:
  absl::Status ParseIf(ExprParser& parser, int line, Body& body) {
    Node node{NodeKind::kIf, line};
    STRATA_ASSIGN_OR_RETURN(ExprPtr condition, parser.ParseExpression());
    if (!parser.AtEnd()) return Error(line, StrCat("unexpected '", parser.Peek().text, "' in if"));
    while (true) {
      Body branch;
      std::optional<ExprParser> rest;
      STRATA_ASSIGN_OR_RETURN(std::string end, ParseBody(branch, {"endif", "elif", "else"}, rest));
      node.branches.emplace_back(std::move(condition), std::move(branch));
      if (end == "elif") {
        STRATA_ASSIGN_OR_RETURN(condition, rest->ParseExpression());
        continue;
      }
      if (end == "else") {
        std::optional<ExprParser> after_else;
        STRATA_ASSIGN_OR_RETURN(std::string end_else, ParseBody(node.else_body, {"endif"}, after_else));
        (void)end_else;
      }
      break;
    }
    body.push_back(std::move(node));
    return absl::OkStatus();
  }

  absl::Status ParseFor(ExprParser& parser, int line, Body& body) {
    Node node{NodeKind::kFor, line};
    do {
      STRATA_ASSIGN_OR_RETURN(std::string target, parser.Name());
      node.targets.push_back(std::move(target));
    } while (parser.Accept(","));
    STRATA_RETURN_IF_ERROR(parser.Expect("in"));
    STRATA_ASSIGN_OR_RETURN(node.expr, parser.ParseExpression());
    if (!parser.AtEnd()) return Error(line, StrCat("'", parser.Peek().text, "' in a for loop is not supported"));
    Body loop_body;
    std::optional<ExprParser> rest;
    STRATA_ASSIGN_OR_RETURN(std::string end, ParseBody(loop_body, {"endfor", "else"}, rest));
    node.branches.emplace_back(nullptr, std::move(loop_body));
    if (end == "else") {
      std::optional<ExprParser> after_else;
      STRATA_ASSIGN_OR_RETURN(std::string end_else, ParseBody(node.else_body, {"endfor"}, after_else));
      (void)end_else;
    }
    body.push_back(std::move(node));
    return absl::OkStatus();
  }

  std::vector<Segment> segments_;
  size_t pos_ = 0;
};

// ---------------------------------------------------------------------------------------------------
// Evaluation.

bool Truthy(const Json& v) {
  if (IsUndefined(v) || v.is_null()) return false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number_integer()) return v.get<int64_t>() != 0;
  if (v.is_number()) return v.get<double>() != 0;
  if (v.is_string()) return !v.get_ref<const std::string&>().empty();
  return !v.empty();
}

std::string TypeName(const Json& v) {
  if (IsUndefined(v)) return "undefined";
  return v.type_name();
}

std::string ToText(const Json& v) {
  if (IsUndefined(v) || v.is_null()) return IsUndefined(v) ? "" : "None";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  return v.dump();
}

class Scope {
 public:
  explicit Scope(const Json& globals) { frames_.push_back(Json::object()); globals_ = &globals; }
  void Push() { frames_.push_back(Json::object()); }
  void Pop() { frames_.pop_back(); }
  void Set(const std::string& name, Json value) { frames_.back()[name] = std::move(value); }
  Json Get(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
      auto found = it->find(name);
      if (found != it->end()) return *found;
    }
    if (globals_->is_object()) {
      auto found = globals_->find(name);
      if (found != globals_->end()) return *found;
    }
    return Undefined();
  }

 private:
  const Json* globals_;
  std::vector<Json> frames_;
};

class Evaluator {
 public:
  explicit Evaluator(const Json& globals) : scope_(globals) {}

  absl::Status Run(const Body& body, std::string& out) {
    for (const Node& node : body) STRATA_RETURN_IF_ERROR(RunNode(node, out));
    return absl::OkStatus();
  }

 private:
  absl::Status RunNode(const Node& node, std::string& out) {
    switch (node.kind) {
      case NodeKind::kText:
        out += node.text;
        return absl::OkStatus();
      case NodeKind::kOutput: {
        STRATA_ASSIGN_OR_RETURN(Json value, Eval(*node.expr));
        out += ToText(value);
        return absl::OkStatus();
      }
      case NodeKind::kSet: {
        STRATA_ASSIGN_OR_RETURN(Json value, Eval(*node.expr));
        scope_.Set(node.text, std::move(value));
        return absl::OkStatus();
      }
      case NodeKind::kIf:
        for (const auto& [condition, branch] : node.branches) {
          STRATA_ASSIGN_OR_RETURN(Json value, Eval(*condition));
          if (Truthy(value)) return Run(branch, out);
        }
        return Run(node.else_body, out);
      case NodeKind::kFor: {
        STRATA_ASSIGN_OR_RETURN(Json iterable, Eval(*node.expr));
        std::vector<Json> items;
        if (iterable.is_array()) {
          items.assign(iterable.begin(), iterable.end());
        } else if (iterable.is_object()) {
          for (auto it = iterable.begin(); it != iterable.end(); ++it) items.emplace_back(it.key());
        } else if (!IsUndefined(iterable) && !iterable.is_null()) {
          return Error(node.line, StrCat("cannot loop over a ", TypeName(iterable)));
        }
        if (items.empty()) return Run(node.else_body, out);
        const int64_t n = static_cast<int64_t>(items.size());
        for (int64_t i = 0; i < n; ++i) {
          scope_.Push();
          if (node.targets.size() == 1) {
            scope_.Set(node.targets[0], items[i]);
          } else if (items[i].is_array() && items[i].size() == node.targets.size()) {
            for (size_t t = 0; t < node.targets.size(); ++t) scope_.Set(node.targets[t], items[i][t]);
          } else {
            scope_.Pop();
            return Error(node.line, StrCat("cannot unpack a ", TypeName(items[i]), " into ", node.targets.size(), " names"));
          }
          scope_.Set("loop", Json{{"index0", i}, {"index", i + 1}, {"first", i == 0}, {"last", i == n - 1},
                                  {"length", n}, {"revindex", n - i}, {"revindex0", n - i - 1}});
          absl::Status status = Run(node.branches[0].second, out);
          scope_.Pop();
          STRATA_RETURN_IF_ERROR(status);
        }
        return absl::OkStatus();
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Json> Eval(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kLiteral:
        return e.literal;
      case ExprKind::kName:
        return scope_.Get(e.name);
      case ExprKind::kList: {
        Json list = Json::array();
        for (const ExprPtr& item : e.args) {
          STRATA_ASSIGN_OR_RETURN(Json value, Eval(*item));
          list.push_back(std::move(value));
        }
        return list;
      }
      case ExprKind::kAttr: {
        STRATA_ASSIGN_OR_RETURN(Json object, Eval(*e.args[0]));
        if (object.is_object()) {
          auto found = object.find(e.name);
          if (found != object.end()) return *found;
        }
        return Undefined();
      }
      case ExprKind::kItem: {
        STRATA_ASSIGN_OR_RETURN(Json object, Eval(*e.args[0]));
        STRATA_ASSIGN_OR_RETURN(Json index, Eval(*e.args[1]));
        if (object.is_object() && index.is_string()) {
          auto found = object.find(index.get<std::string>());
          return found != object.end() ? *found : Undefined();
        }
        if ((object.is_array() || object.is_string()) && index.is_number_integer()) {
          const int64_t size = object.is_array() ? static_cast<int64_t>(object.size())
                                                 : static_cast<int64_t>(object.get_ref<const std::string&>().size());
          int64_t i = index.get<int64_t>();
          if (i < 0) i += size;
          if (i < 0 || i >= size) return Undefined();
          if (object.is_array()) return object[static_cast<size_t>(i)];
          return Json(std::string(1, object.get_ref<const std::string&>()[static_cast<size_t>(i)]));
        }
        if (IsUndefined(object) || object.is_null()) return Undefined();
        return Error(e.line, StrCat("cannot index a ", TypeName(object), " with a ", TypeName(index)));
      }
      case ExprKind::kSlice: {
        STRATA_ASSIGN_OR_RETURN(Json object, Eval(*e.args[0]));
        if (!object.is_array() && !object.is_string()) return Error(e.line, StrCat("cannot slice a ", TypeName(object)));
        const int64_t size = object.is_array() ? static_cast<int64_t>(object.size())
                                               : static_cast<int64_t>(object.get_ref<const std::string&>().size());
        int64_t bounds[2] = {0, size};
        size_t arg = 1;
        for (int b = 0; b < 2; ++b) {
          if (!e.present[b]) continue;
          STRATA_ASSIGN_OR_RETURN(Json bound, Eval(*e.args[arg++]));
          if (!bound.is_number_integer()) return Error(e.line, "slice bounds must be integers");
          int64_t v = bound.get<int64_t>();
          if (v < 0) v += size;
          bounds[b] = std::clamp<int64_t>(v, 0, size);
        }
        if (object.is_string()) {
          const std::string& s = object.get_ref<const std::string&>();
          return Json(bounds[1] > bounds[0] ? s.substr(bounds[0], bounds[1] - bounds[0]) : "");
        }
        Json out = Json::array();
        for (int64_t i = bounds[0]; i < bounds[1]; ++i) out.push_back(object[static_cast<size_t>(i)]);
        return out;
      }
      case ExprKind::kCall: {
        STRATA_ASSIGN_OR_RETURN(Json arg, Eval(*e.args[0]));
        if (e.name == "raise_exception") return absl::InvalidArgumentError(StrCat("chat template: ", ToText(arg)));
        if (!arg.is_number_integer()) return Error(e.line, "range() takes an integer");
        Json out = Json::array();
        for (int64_t i = 0; i < arg.get<int64_t>(); ++i) out.push_back(i);
        return out;
      }
      case ExprKind::kFilter:
        return Filter(e);
      case ExprKind::kUnsupported:
        return absl::UnimplementedError(
            StrCat("chat template: line ", e.line, ": ", e.name, " is not supported by this chat-template interpreter"));
      case ExprKind::kTest: {
        STRATA_ASSIGN_OR_RETURN(Json v, Eval(*e.args[0]));
        bool result = false;
        if (e.name == "defined") result = !IsUndefined(v);
        else if (e.name == "undefined") result = IsUndefined(v);
        else if (e.name == "none") result = v.is_null();
        else if (e.name == "string") result = v.is_string();
        else if (e.name == "number") result = v.is_number();
        else if (e.name == "integer") result = v.is_number_integer();
        else if (e.name == "boolean") result = v.is_boolean();
        else if (e.name == "mapping") result = v.is_object();
        else if (e.name == "iterable") result = v.is_array() || v.is_object() || v.is_string();
        else if (e.name == "sequence") result = v.is_array() || v.is_string();
        return Json(result != e.negated);
      }
      case ExprKind::kNot: {
        STRATA_ASSIGN_OR_RETURN(Json v, Eval(*e.args[0]));
        return Json(!Truthy(v));
      }
      case ExprKind::kNeg: {
        STRATA_ASSIGN_OR_RETURN(Json v, Eval(*e.args[0]));
        if (v.is_number_integer()) return Json(-v.get<int64_t>());
        if (v.is_number()) return Json(-v.get<double>());
        return Error(e.line, StrCat("cannot negate a ", TypeName(v)));
      }
      case ExprKind::kIf: {
        STRATA_ASSIGN_OR_RETURN(Json condition, Eval(*e.args[0]));
        return Eval(*e.args[Truthy(condition) ? 1 : 2]);
      }
      case ExprKind::kBinary:
        return BinaryOp(e);
    }
    return Undefined();
  }

  absl::StatusOr<Json> Filter(const Expr& e) {
    STRATA_ASSIGN_OR_RETURN(Json v, Eval(*e.args[0]));
    if (e.name == "length" || e.name == "count") {
      if (v.is_string()) return Json(static_cast<int64_t>(v.get_ref<const std::string&>().size()));
      if (v.is_array() || v.is_object()) return Json(static_cast<int64_t>(v.size()));
      return Error(e.line, StrCat("'", e.name, "' of a ", TypeName(v)));
    }
    if (e.name == "items") {
      if (!v.is_object()) return Error(e.line, StrCat("'items' of a ", TypeName(v)));
      Json pairs = Json::array();
      for (auto it = v.begin(); it != v.end(); ++it) pairs.push_back(Json::array({it.key(), it.value()}));
      return pairs;
    }
    if (e.name == "join") {
      if (!v.is_array()) return Error(e.line, StrCat("'join' of a ", TypeName(v)));
      std::string separator;
      if (e.args.size() > 1) {
        STRATA_ASSIGN_OR_RETURN(Json s, Eval(*e.args[1]));
        separator = ToText(s);
      }
      std::string joined;
      for (size_t i = 0; i < v.size(); ++i) joined += (i == 0 ? "" : separator) + ToText(v[i]);
      return Json(joined);
    }
    if (e.name == "first" || e.name == "last") {
      if (!v.is_array()) return Error(e.line, StrCat("'", e.name, "' of a ", TypeName(v)));
      if (v.empty()) return Undefined();
      return e.name == "first" ? v.front() : v.back();
    }
    std::string s = ToText(v);
    if (e.name == "string") return Json(s);
    if (!v.is_string()) return Error(e.line, StrCat("filter '", e.name, "' needs a string, got a ", TypeName(v)));
    if (e.name == "trim") {
      const auto space = [](unsigned char c) { return std::isspace(c) != 0; };
      size_t begin = 0, end = s.size();
      while (begin < end && space(static_cast<unsigned char>(s[begin]))) ++begin;
      while (end > begin && space(static_cast<unsigned char>(s[end - 1]))) --end;
      return Json(s.substr(begin, end - begin));
    }
    for (char& c : s) {
      c = static_cast<char>(e.name == "upper" ? std::toupper(static_cast<unsigned char>(c))
                                              : std::tolower(static_cast<unsigned char>(c)));
    }
    return Json(s);
  }

  absl::StatusOr<Json> BinaryOp(const Expr& e) {
    const std::string& op = e.name;
    STRATA_ASSIGN_OR_RETURN(Json left, Eval(*e.args[0]));
    if (op == "and") {
      if (!Truthy(left)) return left;
      return Eval(*e.args[1]);
    }
    if (op == "or") {
      if (Truthy(left)) return left;
      return Eval(*e.args[1]);
    }
    STRATA_ASSIGN_OR_RETURN(Json right, Eval(*e.args[1]));
    if (IsUndefined(left)) left = nullptr;
    if (IsUndefined(right)) right = nullptr;
    if (op == "==") return Json(left == right);
    if (op == "!=") return Json(left != right);
    if (op == "~") return Json(ToText(left) + ToText(right));
    if (op == "in" || op == "not in") {
      bool found = false;
      if (right.is_string() && left.is_string()) {
        found = right.get_ref<const std::string&>().find(left.get_ref<const std::string&>()) != std::string::npos;
      } else if (right.is_array()) {
        found = std::find(right.begin(), right.end(), left) != right.end();
      } else if (right.is_object() && left.is_string()) {
        found = right.contains(left.get<std::string>());
      } else if (!right.is_null()) {
        return Error(e.line, StrCat("'in' a ", TypeName(right)));
      }
      return Json(found != (op == "not in"));
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      const bool both_numbers = left.is_number() && right.is_number();
      if (!both_numbers && !(left.is_string() && right.is_string())) {
        return Error(e.line, StrCat("cannot compare a ", TypeName(left), " with a ", TypeName(right)));
      }
      if (op == "<") return Json(left < right);
      if (op == ">") return Json(right < left);
      if (op == "<=") return Json(!(right < left));
      return Json(!(left < right));
    }
    if (op == "+" && left.is_string() && right.is_string()) {
      return Json(left.get<std::string>() + right.get<std::string>());
    }
    if (op == "+" && left.is_array() && right.is_array()) {
      Json out = left;
      for (const Json& item : right) out.push_back(item);
      return out;
    }
    if (!left.is_number() || !right.is_number()) {
      return Error(e.line, StrCat("cannot apply '", op, "' to a ", TypeName(left), " and a ", TypeName(right)));
    }
    if (left.is_number_integer() && right.is_number_integer() && op != "/") {
      const int64_t a = left.get<int64_t>(), b = right.get<int64_t>();
      if (op == "+") return Json(a + b);
      if (op == "-") return Json(a - b);
      if (op == "*") return Json(a * b);
      if (b == 0) return Error(e.line, "division by zero");
      // Python's floor semantics.
      const int64_t quotient = a / b - ((a % b != 0) && ((a < 0) != (b < 0)) ? 1 : 0);
      if (op == "//") return Json(quotient);
      return Json(a - quotient * b);
    }
    const double a = left.get<double>(), b = right.get<double>();
    if (op == "+") return Json(a + b);
    if (op == "-") return Json(a - b);
    if (op == "*") return Json(a * b);
    if (b == 0) return Error(e.line, "division by zero");
    if (op == "/") return Json(a / b);
    return Error(e.line, StrCat("'", op, "' on floating-point numbers is not supported"));
  }

  Scope scope_;
};

}  // namespace

struct ChatTemplate::Program {
  Body body;
};

ChatTemplate::ChatTemplate(std::unique_ptr<Program> program) : program_(std::move(program)) {}
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;
ChatTemplate::~ChatTemplate() = default;

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string_view source) {
  STRATA_ASSIGN_OR_RETURN(std::vector<Segment> segments, Split(source));
  auto program = std::make_unique<Program>();
  BodyParser parser(std::move(segments));
  std::optional<ExprParser> rest;
  STRATA_ASSIGN_OR_RETURN(std::string end, parser.ParseBody(program->body, {}, rest));
  (void)end;
  return ChatTemplate(std::move(program));
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& variables) const {
  std::string out;
  Evaluator evaluator(variables);
  STRATA_RETURN_IF_ERROR(evaluator.Run(program_->body, out));
  return out;
}

absl::StatusOr<ChatFormat> LoadChatFormat(const std::filesystem::path& dir, std::string bos_fallback,
                                          std::string eos_fallback) {
  ChatFormat format;
  format.bos_token = std::move(bos_fallback);
  format.eos_token = std::move(eos_fallback);
  const std::filesystem::path path = dir / "tokenizer_config.json";
  std::ifstream file(path);
  if (!file) {
    format.source = std::string(kFallbackChatTemplate);
    format.fallback = true;
    return format;
  }
  std::stringstream text;
  text << file.rdbuf();
  const Json config = Json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(StrCat(path.string(), ": not a JSON object"));
  }
  auto token_text = [&](const char* key, std::string& out) -> absl::Status {
    auto found = config.find(key);
    if (found == config.end() || found->is_null()) return absl::OkStatus();
    if (found->is_string()) {
      out = found->get<std::string>();
    } else if (found->is_object() && found->contains("content") && (*found)["content"].is_string()) {
      out = (*found)["content"].get<std::string>();
    } else {
      return absl::InvalidArgumentError(StrCat(path.string(), ": '", key, "' is neither a string nor {\"content\": ...}"));
    }
    return absl::OkStatus();
  };
  STRATA_RETURN_IF_ERROR(token_text("bos_token", format.bos_token));
  STRATA_RETURN_IF_ERROR(token_text("eos_token", format.eos_token));
  auto chat = config.find("chat_template");
  if (chat == config.end() || chat->is_null()) {
    format.source = std::string(kFallbackChatTemplate);
    format.fallback = true;
  } else if (chat->is_string()) {
    format.source = chat->get<std::string>();
  } else if (chat->is_array()) {
    for (const Json& entry : *chat) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        format.source = entry["template"].get<std::string>();
      }
    }
    if (format.source.empty()) {
      return absl::InvalidArgumentError(StrCat(path.string(), ": 'chat_template' is a list without a \"default\" entry"));
    }
  } else {
    return absl::InvalidArgumentError(StrCat(path.string(), ": 'chat_template' is neither a string nor a list"));
  }
  return format;
}

}  // namespace strata::frontdoor
