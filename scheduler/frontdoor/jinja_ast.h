// The chat-template interpreter's syntax tree (private to scheduler/frontdoor/): what jinja_parser builds
// and jinja_eval runs. Values: jinja_value.h.
#ifndef STRATA_SCHEDULER_FRONTDOOR_JINJA_AST_H_
#define STRATA_SCHEDULER_FRONTDOOR_JINJA_AST_H_

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/strings.h"
#include "scheduler/frontdoor/jinja_value.h"

namespace strata::frontdoor::jinja {

// InvalidArgument "chat template: line N: message".
inline absl::Status Error(int line, std::string_view message) {
  return absl::InvalidArgumentError(StrCat("chat template: line ", line, ": ", message));
}

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

// kCall: a global function (name) with its arguments; kMethod: args[0].name(arguments); kFilter:
// args[0] | name(arguments); kTest: args[0] is [not] name(arguments). Their arguments follow the operand in
// `args`, with `keywords` naming each one ("" for a positional one). kDict: keys and values alternate.
enum class ExprKind {
  kLiteral, kName, kAttr, kItem, kSlice, kCall, kMethod, kFilter, kTest, kNot, kNeg, kBinary, kIf, kList, kDict
};

struct Expr {
  ExprKind kind;
  int line = 0;
  Json literal;                       // kLiteral
  std::string name;                   // kName, kAttr, kCall, kMethod, kFilter, kTest (callee), kBinary (operator)
  bool negated = false;               // kTest: `is not`
  std::vector<ExprPtr> args;          // operands (kSlice: [object, from?, to?]), then arguments
  std::vector<std::string> keywords;  // kCall, kMethod, kFilter, kTest: the name of each argument, or ""
  std::vector<bool> present;          // kSlice: which bounds were written
};

struct Node;
using Body = std::vector<Node>;

// kSet: `{% set name = expr %}`, `{% set name.attribute = expr %}` (attribute non-empty: a namespace's),
// or `{% set name %}body{% endset %}` (expr null). kFor: `for targets in expr [if filter]`.
enum class NodeKind { kText, kOutput, kIf, kFor, kSet, kBreak, kContinue };

struct Node {
  NodeKind kind;
  int line = 0;
  std::string text;                                  // kText; kSet: name
  std::string attribute;                             // kSet: the namespace attribute
  std::vector<std::string> targets;                  // kFor: the loop variable(s)
  ExprPtr expr;                                      // kOutput, kFor (iterable), kSet (value)
  ExprPtr filter;                                    // kFor: the `if` after the iterable
  std::vector<std::pair<ExprPtr, Body>> branches;    // kIf: (condition, body); kFor, block kSet: one (null, body)
  Body else_body;                                    // kIf, kFor
};

}  // namespace strata::frontdoor::jinja

#endif  // STRATA_SCHEDULER_FRONTDOOR_JINJA_AST_H_
