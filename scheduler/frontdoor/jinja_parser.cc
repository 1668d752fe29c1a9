#include "scheduler/frontdoor/jinja_parser.h"

#include <algorithm>
#include <initializer_list>
#include <optional>
#include <utility>

#include "common/status.h"
#include "scheduler/frontdoor/jinja_builtins.h"
#include "scheduler/frontdoor/jinja_lexer.h"

namespace strata::frontdoor::jinja {
namespace {

// Names after `is` that end a test instead of starting its argument (`x is defined and y`).
constexpr std::string_view kNotTestArguments[] = {"and", "or", "else", "if", "is", "in", "not"};

bool In(std::string_view name, const auto& list) { return std::find(std::begin(list), std::end(list), name) != std::end(list); }

class ExprParser {
 public:
  ExprParser(std::vector<Token> tokens, int line) : tokens_(std::move(tokens)), line_(line) {}

  absl::StatusOr<ExprPtr> ParseExpression() { return ParseConditional(); }
  // An expression without a top-level `a if b else c`.
  absl::StatusOr<ExprPtr> ParseOrExpression() { return ParseOr(); }
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

  // The arguments after '(' up to ')', positional or `name=value`, appended to `e`'s args and keywords.
  absl::Status ParseArguments(Expr& e) {
    bool first = true;
    while (!Accept(")")) {
      if (!first) STRATA_RETURN_IF_ERROR(Expect(","));
      first = false;
      if (Accept(")")) break;  // a trailing comma
      std::string keyword;
      if (Peek().kind == TokenKind::kName && Peek(1).kind == TokenKind::kOperator && Peek(1).text == "=") {
        keyword = Peek().text;
        pos_ += 2;
      } else if (!e.keywords.empty() && !e.keywords.back().empty()) {
        return Error(line_, "a positional argument after a keyword argument");
      }
      STRATA_ASSIGN_OR_RETURN(ExprPtr arg, ParseExpression());
      e.args.push_back(std::move(arg));
      e.keywords.push_back(std::move(keyword));
      if (AtEnd()) return Error(line_, "missing ')'");
    }
    return absl::OkStatus();
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
        STRATA_ASSIGN_OR_RETURN(e->name, TestName());
        if (!IsTest(e->name)) return Error(line_, StrCat("no test named '", e->name, "'"));
        e->args.push_back(std::move(left));
        if (Accept("(")) {
          STRATA_RETURN_IF_ERROR(ParseArguments(*e));
        } else if (StartsTestArgument()) {
          STRATA_ASSIGN_OR_RETURN(ExprPtr arg, ParsePostfix());
          e->args.push_back(std::move(arg));
          e->keywords.emplace_back();
        }
        left = std::move(e);
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
  // A test's name: a name, or a comparison operator (`is ==`, `is >=`: tests too in Jinja).
  absl::StatusOr<std::string> TestName() {
    if (Peek().kind == TokenKind::kOperator && (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" ||
                                                Peek().text == "<=" || Peek().text == ">" || Peek().text == ">=")) {
      return tokens_[pos_++].text;
    }
    return Name();
  }
  // Jinja's rule for `x is test arg` without parentheses.
  bool StartsTestArgument() const {
    const Token& t = Peek();
    if (t.kind == TokenKind::kString || t.kind == TokenKind::kInteger || t.kind == TokenKind::kFloat) return true;
    if (t.kind == TokenKind::kName) return !In(t.text, kNotTestArguments);
    return t.kind == TokenKind::kOperator && (t.text == "[" || t.text == "{");
  }

  absl::StatusOr<ExprPtr> ParsePostfix() {
    STRATA_ASSIGN_OR_RETURN(ExprPtr e, ParsePrimary());
    while (true) {
      if (Accept(".")) {
        STRATA_ASSIGN_OR_RETURN(std::string name, Name());
        ExprPtr next = Make(Accept("(") ? ExprKind::kMethod : ExprKind::kAttr);
        next->name = std::move(name);
        next->args.push_back(std::move(e));
        if (next->kind == ExprKind::kMethod) STRATA_RETURN_IF_ERROR(ParseArguments(*next));
        e = std::move(next);
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
        if (!IsFilter(filter->name)) return Error(line_, StrCat("no filter named '", filter->name, "'"));
        filter->args.push_back(std::move(e));
        if (Accept("(")) STRATA_RETURN_IF_ERROR(ParseArguments(*filter));
        e = std::move(filter);
      } else if (Peek().kind == TokenKind::kOperator && Peek().text == "(") {
        return Error(line_, "only functions and methods can be called");
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
    if (token.kind == TokenKind::kInteger || token.kind == TokenKind::kFloat) {
      ++pos_;
      ExprPtr e = Make(ExprKind::kLiteral);
      if (token.kind == TokenKind::kInteger)
        e->literal = token.integer;
      else
        e->literal = token.number;
      return e;
    }
    if (token.kind == TokenKind::kOperator && token.text == "{") {
      ++pos_;
      ExprPtr e = Make(ExprKind::kDict);
      while (!Accept("}")) {
        if (!e->args.empty()) STRATA_RETURN_IF_ERROR(Expect(","));
        if (Accept("}")) break;
        STRATA_ASSIGN_OR_RETURN(ExprPtr key, ParseExpression());
        STRATA_RETURN_IF_ERROR(Expect(":"));
        STRATA_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
        e->args.push_back(std::move(key));
        e->args.push_back(std::move(value));
        if (AtEnd()) return Error(line_, "missing '}'");
      }
      return e;
    }
    if (token.kind == TokenKind::kOperator && token.text == "(") {
      ++pos_;
      if (Accept(")")) return Make(ExprKind::kList);  // ()
      STRATA_ASSIGN_OR_RETURN(ExprPtr e, ParseExpression());
      if (Peek().text != ",") {
        STRATA_RETURN_IF_ERROR(Expect(")"));
        return e;
      }
      // A tuple, which the interpreter holds as a list (`x in ('a', 'b')`, `s.endswith(('a', 'b'))`).
      ExprPtr tuple = Make(ExprKind::kList);
      tuple->args.push_back(std::move(e));
      while (Accept(",")) {
        if (Peek().text == ")") break;
        STRATA_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
        tuple->args.push_back(std::move(item));
      }
      STRATA_RETURN_IF_ERROR(Expect(")"));
      return tuple;
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
        ExprPtr e = Make(ExprKind::kCall);
        e->name = token.text;
        STRATA_RETURN_IF_ERROR(ParseArguments(*e));
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
        STRATA_RETURN_IF_ERROR(ParseSet(parser, segment.line, body));
      } else if (keyword == "break" || keyword == "continue") {
        if (loop_depth_ == 0) return Error(segment.line, StrCat("'{% ", keyword, " %}' outside a for loop"));
        if (!parser.AtEnd()) return Error(segment.line, StrCat("unexpected '", parser.Peek().text, "'"));
        body.push_back(Node{keyword == "break" ? NodeKind::kBreak : NodeKind::kContinue, segment.line});
      } else if (keyword == "endif" || keyword == "endfor" || keyword == "endset" || keyword == "elif" ||
                 keyword == "else") {
        return Error(segment.line, StrCat("'{% ", keyword, " %}' without its opening statement"));
      } else {
        return Error(segment.line,
                     StrCat("statement '{% ", keyword, " %}' is not supported (for, if, set, break, continue are)"));
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

  absl::Status ParseSet(ExprParser& parser, int line, Body& body) {
    Node node{NodeKind::kSet, line};
    STRATA_ASSIGN_OR_RETURN(node.text, parser.Name());
    if (parser.Accept(".")) {
      STRATA_ASSIGN_OR_RETURN(node.attribute, parser.Name());
    }
    if (parser.Peek().text == ",") return Error(line, "'{% set a, b = ... %}' (tuple assignment) is not supported");
    if (parser.AtEnd()) {
      if (!node.attribute.empty()) return Error(line, "a block '{% set %}' cannot assign an attribute");
      Body captured;
      std::optional<ExprParser> rest;
      STRATA_ASSIGN_OR_RETURN(std::string end, ParseBody(captured, {"endset"}, rest));
      (void)end;
      node.branches.emplace_back(nullptr, std::move(captured));
      body.push_back(std::move(node));
      return absl::OkStatus();
    }
    STRATA_RETURN_IF_ERROR(parser.Expect("="));
    STRATA_ASSIGN_OR_RETURN(node.expr, parser.ParseExpression());
    if (!parser.AtEnd()) return Error(line, StrCat("unexpected '", parser.Peek().text, "'"));
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
    // The iterable stops before a loop filter's `if` (`for x in xs if x.ok`), which is no conditional.
    STRATA_ASSIGN_OR_RETURN(node.expr, parser.ParseOrExpression());
    if (parser.Accept("if")) {
      STRATA_ASSIGN_OR_RETURN(node.filter, parser.ParseExpression());
    }
    if (!parser.AtEnd()) return Error(line, StrCat("'", parser.Peek().text, "' in a for loop is not supported"));
    Body loop_body;
    std::optional<ExprParser> rest;
    ++loop_depth_;
    absl::StatusOr<std::string> end = ParseBody(loop_body, {"endfor", "else"}, rest);
    --loop_depth_;
    STRATA_RETURN_IF_ERROR(end.status());
    node.branches.emplace_back(nullptr, std::move(loop_body));
    if (*end == "else") {
      std::optional<ExprParser> after_else;
      STRATA_ASSIGN_OR_RETURN(std::string end_else, ParseBody(node.else_body, {"endfor"}, after_else));
      (void)end_else;
    }
    body.push_back(std::move(node));
    return absl::OkStatus();
  }

  std::vector<Segment> segments_;
  size_t pos_ = 0;
  int loop_depth_ = 0;  // for loops around the segment being parsed (break and continue need one)
};

}  // namespace

absl::StatusOr<Body> Parse(std::string_view source) {
  STRATA_ASSIGN_OR_RETURN(std::vector<Segment> segments, Split(source));
  Body body;
  BodyParser parser(std::move(segments));
  std::optional<ExprParser> rest;
  STRATA_ASSIGN_OR_RETURN(std::string end, parser.ParseBody(body, {}, rest));
  (void)end;
  return body;
}

}  // namespace strata::frontdoor::jinja
