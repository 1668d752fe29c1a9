// The chat-template interpreter's values (private to scheduler/frontdoor/): ordered JSON (a dict keeps its
// insertion order, as Python's does, so `tojson` and `items` print keys as the caller sent them), Jinja's
// Undefined, built-in functions as values, and how Python prints each of them (str() and json.dumps()).
#ifndef STRATA_SCHEDULER_FRONTDOOR_JINJA_VALUE_H_
#define STRATA_SCHEDULER_FRONTDOOR_JINJA_VALUE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace strata::frontdoor::jinja {

using Json = nlohmann::ordered_json;

// Jinja's Undefined: a discarded json value (never produced by parsing real data).
inline Json Undefined() { return Json(Json::value_t::discarded); }
inline bool IsUndefined(const Json& value) { return value.is_discarded(); }

// A built-in function (raise_exception, range, namespace, strftime_now) as a value, so that
// `strftime_now is defined` holds: a json binary value (never produced by parsing) holding the name.
Json FunctionValue(std::string_view name);
bool IsFunction(const Json& value);
std::string FunctionName(const Json& value);

// Python's truthiness: none, undefined, false, 0, "", [] and {} are false.
bool Truthy(const Json& value);

// "string", "integer", "list", "dict", ... for error messages.
std::string TypeName(const Json& value);
// The same with its article: "a string", "an integer".
std::string Described(const Json& value);

// Python's str(): strings as they are, True/False/None, integers, floats as repr() (1.0, 0.1, 1e+16),
// lists and dicts as repr() (['a', 1], {'k': None}); Undefined is "".
std::string ToText(const Json& value);

// Python's repr() of a value (strings quoted as Python quotes them).
std::string ToRepr(const Json& value);

// Hugging Face's `tojson` filter, which is Python's json.dumps(value, ensure_ascii=False, indent=indent):
// keys in insertion order, ", " and ": " between items without an indent, "," and newlines with one.
// InvalidArgument for what JSON cannot hold (Undefined inside a container, a function).
absl::StatusOr<std::string> ToJson(const Json& value, int indent);

// The code points of a UTF-8 string, each as its bytes: Python indexes, slices and counts strings by code
// point. Bytes that are not valid UTF-8 count one each.
std::vector<std::string_view> CodePoints(std::string_view text);

}  // namespace strata::frontdoor::jinja

#endif  // STRATA_SCHEDULER_FRONTDOOR_JINJA_VALUE_H_
