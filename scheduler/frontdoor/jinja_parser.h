// The chat-template interpreter's parser (private to scheduler/frontdoor/): statements by recursive descent
// over the lexer's segments, expressions by precedence climbing (Jinja's precedence: filters bind tighter
// than arithmetic, `not` looser than comparisons and tests). chat_template.h lists what is supported.
#ifndef STRATA_SCHEDULER_FRONTDOOR_JINJA_PARSER_H_
#define STRATA_SCHEDULER_FRONTDOOR_JINJA_PARSER_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "scheduler/frontdoor/jinja_ast.h"

namespace strata::frontdoor::jinja {

// The template's syntax tree. InvalidArgument naming the line for a syntax error or an unsupported
// statement; unsupported filters, functions, tests and method calls become kUnsupported nodes.
absl::StatusOr<Body> Parse(std::string_view source);

}  // namespace strata::frontdoor::jinja

#endif  // STRATA_SCHEDULER_FRONTDOOR_JINJA_PARSER_H_
