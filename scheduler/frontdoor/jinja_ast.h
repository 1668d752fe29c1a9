// The chat-template interpreter's syntax tree (private to scheduler/frontdoor/): what jinja_parser builds
// and jinja_eval runs. Values are nlohmann::json; Jinja's Undefined is a discarded json value.
#ifndef STRATA_SCHEDULER_FRONTDOOR_JINJA_AST_H_
#define STRATA_SCHEDULER_FRONTDOOR_JINJA_AST_H_

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace strata::frontdoor::jinja {

using Json = nlohmann::json;

// Jinja's Undefined: a discarded json value (never produced by parsing real data).
inline Json Undefined() { return Json(Json::value_t::discarded); }
inline bool IsUndefined(const Json& value) { return value.is_discarded(); }

// InvalidArgument "chat template: line N: message".
inline absl::Status Error(int line, std::string_view message) {
  return absl::InvalidArgumentError(StrCat("chat template: line ", line, ": ", message));
}

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

}  // namespace strata::frontdoor::jinja

#endif  // STRATA_SCHEDULER_FRONTDOOR_JINJA_AST_H_
