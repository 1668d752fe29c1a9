// The chat-template interpreter's built-ins (private to scheduler/frontdoor/): Jinja's filters and tests and
// Python's string, list and dict methods that chat templates call, as pure functions of values.
// chat_template.h lists them.
#ifndef STRATA_SCHEDULER_FRONTDOOR_JINJA_BUILTINS_H_
#define STRATA_SCHEDULER_FRONTDOOR_JINJA_BUILTINS_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/frontdoor/jinja_value.h"

namespace strata::frontdoor::jinja {

// The evaluated arguments of a call: positional ones, then `name=value` ones.
struct Arguments {
  std::vector<Json> positional;
  std::vector<std::pair<std::string, Json>> keyword;

  // The argument at `index` or named `name`, or nullptr when absent.
  const Json* Find(size_t index, std::string_view name) const;
};

// Whether a filter or test of that name exists (the parser refuses the others, as Jinja does).
bool IsFilter(std::string_view name);
bool IsTest(std::string_view name);

// `value | name(args)`. InvalidArgument "chat template: line N: ..." for a wrong type or argument.
absl::StatusOr<Json> ApplyFilter(std::string_view name, const Json& value, const Arguments& args, int line);

// `value is name(args)`.
absl::StatusOr<bool> ApplyTest(std::string_view name, const Json& value, const Arguments& args, int line);

// Python's `item in container`: a substring, a list element, a dict key. InvalidArgument for other containers
// (none and undefined contain nothing).
absl::StatusOr<bool> Contains(const Json& container, const Json& item, int line);

// `object.name(args)`: str.strip/lstrip/rstrip/split/startswith/endswith/upper/lower/title/capitalize/replace/
// find/count, dict.items/keys/values/get. InvalidArgument for a method the type does not have.
absl::StatusOr<Json> CallMethod(const Json& object, std::string_view name, const Arguments& args, int line);

}  // namespace strata::frontdoor::jinja

#endif  // STRATA_SCHEDULER_FRONTDOOR_JINJA_BUILTINS_H_
