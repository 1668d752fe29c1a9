// The chat-template interpreter's evaluator (private to scheduler/frontdoor/): runs a syntax tree over
// json variables with Jinja's semantics (truthiness, Python's floor division and modulo, `set` scoped to
// the enclosing for loop).
#ifndef STRATA_SCHEDULER_FRONTDOOR_JINJA_EVAL_H_
#define STRATA_SCHEDULER_FRONTDOOR_JINJA_EVAL_H_

#include <string>

#include "absl/status/status.h"
#include "scheduler/frontdoor/jinja_ast.h"

namespace strata::frontdoor::jinja {

// Appends the rendering of `body` to `out`. InvalidArgument for raise_exception() (its message) and
// type errors, Unimplemented for a kUnsupported node that is evaluated.
absl::Status Render(const Body& body, const Json& variables, std::string& out);

}  // namespace strata::frontdoor::jinja

#endif  // STRATA_SCHEDULER_FRONTDOOR_JINJA_EVAL_H_
