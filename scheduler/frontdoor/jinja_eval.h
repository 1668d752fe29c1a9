// The chat-template interpreter's evaluator (private to scheduler/frontdoor/): runs a syntax tree over
// json variables with Jinja's semantics (truthiness, Python's floor division and modulo, `set` scoped to
// the enclosing for loop, namespaces that carry values out of loops, break and continue).
#ifndef STRATA_SCHEDULER_FRONTDOOR_JINJA_EVAL_H_
#define STRATA_SCHEDULER_FRONTDOOR_JINJA_EVAL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "scheduler/frontdoor/jinja_ast.h"

namespace strata::frontdoor::jinja {

// Appends the rendering of `body` with `variables` (an object) to `out`; strftime_now() formats `now` in
// local time. InvalidArgument for raise_exception() (its message), a type error, or a call of something
// that is no function.
absl::Status Render(const Body& body, const Json& variables, absl::Time now, std::string& out);

}  // namespace strata::frontdoor::jinja

#endif  // STRATA_SCHEDULER_FRONTDOOR_JINJA_EVAL_H_
