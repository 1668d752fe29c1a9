#include "scheduler/frontdoor/jinja_builtins.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>

#include "common/status.h"
#include "scheduler/frontdoor/jinja_ast.h"

namespace strata::frontdoor::jinja {
namespace {

constexpr std::string_view kFilters[] = {
    "abs",    "capitalize", "count",  "d",     "default", "first", "float",  "int",        "items",
    "join",   "last",       "length", "list",  "lower",   "map",   "reject", "rejectattr", "replace",
    "select", "selectattr", "string", "title", "tojson",  "trim",  "upper"};
constexpr std::string_view kTests[] = {
    "boolean", "callable", "defined", "divisibleby", "eq",       "equalto",  "even",   "false", "float",
    "ge",      "gt",       "in",      "integer",     "iterable", "le",       "lower",  "lt",    "mapping",
    "ne",      "none",     "number",  "odd",         "sameas",   "sequence", "string", "true",  "undefined",
    "upper",   "==",       "!=",      "<",           "<=",       ">",        ">="};

bool In(std::string_view name, const auto& list) {
  return std::find(std::begin(list), std::end(list), name) != std::end(list);
}

// Python's str.isspace() code points.
bool IsPythonSpace(std::string_view cp) {
  if (cp.size() == 1) {
    const auto c = static_cast<unsigned char>(cp[0]);
    return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
  }
  static constexpr std::string_view kSpaces[] = {"\u0085", "\u00a0", "\u1680", "\u2000", "\u2001", "\u2002", "\u2003",
                                                 "\u2004", "\u2005", "\u2006", "\u2007", "\u2008", "\u2009", "\u200a",
                                                 "\u2028", "\u2029", "\u202f", "\u205f", "\u3000"};
  return In(cp, kSpaces);
}

enum class Side { kBoth, kLeft, kRight };

// Python's str.strip([chars]).
std::string Strip(const std::string& text, const Json* chars, Side side) {
  const std::vector<std::string_view> cps = CodePoints(text);
  std::vector<std::string_view> set;
  const bool whitespace = chars == nullptr || chars->is_null() || IsUndefined(*chars);
  if (!whitespace) set = CodePoints(chars->get_ref<const std::string&>());
  auto strip = [&](std::string_view cp) { return whitespace ? IsPythonSpace(cp) : In(cp, set); };
  size_t begin = 0, end = cps.size();
  if (side != Side::kRight) {
    while (begin < end && strip(cps[begin])) ++begin;
  }
  if (side != Side::kLeft) {
    while (end > begin && strip(cps[end - 1])) --end;
  }
  std::string out;
  for (size_t i = begin; i < end; ++i) out += cps[i];
  return out;
}

// Python's str.split(sep=None, maxsplit=-1).
Json Split(const std::string& text, const Json* separator, int64_t max_splits) {
  Json out = Json::array();
  if (separator == nullptr || separator->is_null()) {
    const std::vector<std::string_view> cps = CodePoints(text);
    std::string word;
    size_t i = 0;
    while (i < cps.size() && IsPythonSpace(cps[i])) ++i;
    for (; i < cps.size(); ++i) {
      if (IsPythonSpace(cps[i]) && (max_splits < 0 || static_cast<int64_t>(out.size()) < max_splits)) {
        out.push_back(word);
        word.clear();
        while (i + 1 < cps.size() && IsPythonSpace(cps[i + 1])) ++i;
        if (i + 1 == cps.size()) return out;
        continue;
      }
      word += cps[i];
    }
    if (!word.empty()) out.push_back(word);
    return out;
  }
  const std::string& sep = separator->get_ref<const std::string&>();
  size_t start = 0;
  while (max_splits < 0 || static_cast<int64_t>(out.size()) < max_splits) {
    const size_t found = text.find(sep, start);
    if (found == std::string::npos) break;
    out.push_back(text.substr(start, found - start));
    start = found + sep.size();
  }
  out.push_back(text.substr(start));
  return out;
}

std::string Replace(const std::string& text, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  size_t start = 0;
  int64_t done = 0;
  if (from.empty()) {
    // Python inserts `to` before every code point and at the end.
    for (std::string_view cp : CodePoints(text)) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      out += cp;
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  while (count < 0 || done < count) {
    const size_t found = text.find(from, start);
    if (found == std::string::npos) break;
    out.append(text, start, found - start);
    out += to;
    start = found + from.size();
    ++done;
  }
  out.append(text, start, std::string::npos);
  return out;
}

int AsciiUpper(int c) { return std::toupper(c); }
int AsciiLower(int c) { return std::tolower(c); }

std::string MapAscii(std::string text, int (*f)(int)) {
  for (char& c : text) c = static_cast<char>(f(static_cast<unsigned char>(c)));
  return text;
}

// Python's str.title() over ASCII letters: a letter after a non-letter is upper-cased, the others lowered.
std::string Title(std::string text) {
  bool previous_letter = false;
  for (char& c : text) {
    const int u = static_cast<unsigned char>(c);
    const bool letter = std::isalpha(u) != 0;
    c = static_cast<char>(letter ? (previous_letter ? std::tolower(u) : std::toupper(u)) : u);
    previous_letter = letter;
  }
  return text;
}

int64_t Length(const Json& value) {
  if (value.is_string()) return static_cast<int64_t>(CodePoints(value.get_ref<const std::string&>()).size());
  return static_cast<int64_t>(value.size());
}

// The items a filter iterates: a list's elements, a dict's keys, a string's characters.
absl::StatusOr<std::vector<Json>> Iterate(const Json& value, std::string_view filter, int line) {
  std::vector<Json> items;
  if (value.is_array()) {
    items.assign(value.begin(), value.end());
  } else if (value.is_object()) {
    for (auto it = value.begin(); it != value.end(); ++it) items.emplace_back(it.key());
  } else if (value.is_string()) {
    for (std::string_view cp : CodePoints(value.get_ref<const std::string&>())) items.emplace_back(std::string(cp));
  } else if (!IsUndefined(value)) {
    return Error(line, StrCat("filter '", filter, "' needs something to iterate, got ", Described(value)));
  }
  return items;
}

// An attribute of an item as Jinja's `attribute=` reads it: dotted names walk into dicts, integers index lists.
Json Attribute(const Json& item, const std::string& path) {
  Json current = item;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (current.is_object() && current.contains(part)) {
      current = current[part];
    } else if (current.is_array() && !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit) &&
               std::stoul(part) < current.size()) {
      current = current[std::stoul(part)];
    } else {
      return Undefined();
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return current;
}

absl::StatusOr<const std::string*> StringArgument(const Arguments& args, size_t index, std::string_view name,
                                                  std::string_view what, int line, bool required = true) {
  const Json* arg = args.Find(index, name);
  if (arg == nullptr || IsUndefined(*arg)) {
    if (!required) return nullptr;
    return Error(line, StrCat(what, " needs a string argument '", name, "'"));
  }
  if (!arg->is_string()) return Error(line, StrCat(what, ": '", name, "' must be a string, got ", Described(*arg)));
  return &arg->get_ref<const std::string&>();
}

absl::StatusOr<int64_t> IntArgument(const Arguments& args, size_t index, std::string_view name, int64_t fallback,
                                    std::string_view what, int line) {
  const Json* arg = args.Find(index, name);
  if (arg == nullptr || arg->is_null() || IsUndefined(*arg)) return fallback;
  if (!arg->is_number_integer()) return Error(line, StrCat(what, ": '", name, "' must be an integer"));
  return arg->get<int64_t>();
}

// select/reject/selectattr/rejectattr: keep the items whose (attribute's) test is `keep`.
absl::StatusOr<Json> Select(const Json& value, const Arguments& args, bool by_attribute, bool keep,
                            std::string_view filter, int line) {
  STRATA_ASSIGN_OR_RETURN(std::vector<Json> items, Iterate(value, filter, line));
  size_t next = 0;
  std::string attribute;
  if (by_attribute) {
    STRATA_ASSIGN_OR_RETURN(const std::string* name, StringArgument(args, next++, "attribute", filter, line));
    attribute = *name;
  }
  std::string test;
  if (next < args.positional.size()) {
    if (!args.positional[next].is_string()) return Error(line, StrCat(filter, ": the test must be named by a string"));
    test = args.positional[next++].get<std::string>();
    if (!IsTest(test)) return Error(line, StrCat(filter, ": no test named '", test, "'"));
  }
  Arguments test_args;
  test_args.positional.assign(
      args.positional.begin() + static_cast<std::ptrdiff_t>(std::min(next, args.positional.size())),
      args.positional.end());
  Json out = Json::array();
  for (const Json& item : items) {
    const Json subject = by_attribute ? Attribute(item, attribute) : item;
    bool passed = Truthy(subject);
    if (!test.empty()) {
      STRATA_ASSIGN_OR_RETURN(passed, ApplyTest(test, subject, test_args, line));
    }
    if (passed == keep) out.push_back(item);
  }
  return out;
}

absl::StatusOr<Json> Map(const Json& value, const Arguments& args, int line) {
  STRATA_ASSIGN_OR_RETURN(std::vector<Json> items, Iterate(value, "map", line));
  Json out = Json::array();
  if (const Json* attribute = args.Find(SIZE_MAX, "attribute"); attribute != nullptr) {
    if (!attribute->is_string()) return Error(line, "map: 'attribute' must be a string");
    const Json* fallback = args.Find(SIZE_MAX, "default");
    for (const Json& item : items) {
      Json v = Attribute(item, attribute->get<std::string>());
      out.push_back(IsUndefined(v) && fallback != nullptr ? *fallback : v);
    }
    return out;
  }
  if (args.positional.empty() || !args.positional[0].is_string()) {
    return Error(line, "map needs a filter name or attribute=");
  }
  const std::string filter = args.positional[0].get<std::string>();
  if (!IsFilter(filter)) return Error(line, StrCat("map: no filter named '", filter, "'"));
  Arguments rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Json& item : items) {
    STRATA_ASSIGN_OR_RETURN(Json mapped, ApplyFilter(filter, item, rest, line));
    out.push_back(std::move(mapped));
  }
  return out;
}

absl::StatusOr<bool> Compare(const Json& a, const Json& b, std::string_view op, int line) {
  if (op == "==" || op == "eq" || op == "equalto") return a == b;
  if (op == "!=" || op == "ne") return a != b;
  const bool numbers = a.is_number() && b.is_number();
  if (!numbers && !(a.is_string() && b.is_string())) {
    return Error(line, StrCat("cannot compare ", Described(a), " with ", Described(b)));
  }
  if (op == "<" || op == "lt") return a < b;
  if (op == "<=" || op == "le") return !(b < a);
  if (op == ">" || op == "gt") return b < a;
  return !(a < b);  // >=, ge
}

}  // namespace

const Json* Arguments::Find(size_t index, std::string_view name) const {
  if (index < positional.size()) return &positional[index];
  for (const auto& [key, value] : keyword) {
    if (key == name) return &value;
  }
  return nullptr;
}

bool IsFilter(std::string_view name) { return In(name, kFilters); }
bool IsTest(std::string_view name) { return In(name, kTests); }

absl::StatusOr<bool> Contains(const Json& container, const Json& item, int line) {
  if (container.is_string()) {
    if (!item.is_string())
      return Error(line, StrCat("'in <string>' needs a string on the left, got ", Described(item)));
    return container.get_ref<const std::string&>().find(item.get_ref<const std::string&>()) != std::string::npos;
  }
  if (container.is_array()) return std::find(container.begin(), container.end(), item) != container.end();
  if (container.is_object()) return item.is_string() && container.contains(item.get<std::string>());
  if (container.is_null() || IsUndefined(container)) return false;
  return Error(line, StrCat("'in' ", Described(container)));
}

absl::StatusOr<Json> ApplyFilter(std::string_view name, const Json& value, const Arguments& args, int line) {
  const std::string what = StrCat("filter '", name, "'");
  if (name == "default" || name == "d") {
    const Json* fallback = args.Find(0, "default_value");
    const Json* boolean = args.Find(1, "boolean");
    const bool use_fallback = IsUndefined(value) || (boolean != nullptr && Truthy(*boolean) && !Truthy(value));
    if (!use_fallback) return value;
    return fallback != nullptr ? *fallback : Json("");
  }
  if (name == "length" || name == "count") {
    if (!value.is_string() && !value.is_array() && !value.is_object()) {
      return Error(line, StrCat(what, " of ", Described(value)));
    }
    return Json(Length(value));
  }
  if (name == "tojson") {
    STRATA_ASSIGN_OR_RETURN(int64_t indent, IntArgument(args, 0, "indent", 0, what, line));
    absl::StatusOr<std::string> text = ToJson(value, static_cast<int>(indent));
    if (!text.ok()) return Error(line, std::string(text.status().message()));
    return Json(*std::move(text));
  }
  if (name == "items") {
    if (IsUndefined(value)) return Json::array();
    if (!value.is_object()) return Error(line, StrCat(what, " of ", Described(value)));
    Json pairs = Json::array();
    for (auto it = value.begin(); it != value.end(); ++it) pairs.push_back(Json::array({it.key(), it.value()}));
    return pairs;
  }
  if (name == "list") {
    STRATA_ASSIGN_OR_RETURN(std::vector<Json> items, Iterate(value, name, line));
    return Json(items);
  }
  if (name == "join") {
    STRATA_ASSIGN_OR_RETURN(std::vector<Json> items, Iterate(value, name, line));
    std::string separator;
    if (const Json* s = args.Find(0, "d"); s != nullptr) separator = ToText(*s);
    const Json* attribute = args.Find(1, "attribute");
    std::string joined;
    for (size_t i = 0; i < items.size(); ++i) {
      const Json item = attribute != nullptr && attribute->is_string()
                            ? Attribute(items[i], attribute->get<std::string>())
                            : items[i];
      if (i > 0) joined += separator;
      joined += ToText(item);
    }
    return Json(joined);
  }
  if (name == "first" || name == "last") {
    STRATA_ASSIGN_OR_RETURN(std::vector<Json> items, Iterate(value, name, line));
    if (items.empty()) return Undefined();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "map") return Map(value, args, line);
  if (name == "select" || name == "reject") return Select(value, args, false, name == "select", name, line);
  if (name == "selectattr" || name == "rejectattr") return Select(value, args, true, name == "selectattr", name, line);
  if (name == "string") return Json(ToText(value));
  if (name == "int" || name == "float") {
    const Json* fallback = args.Find(0, "default");
    Json result = fallback != nullptr ? *fallback : (name == "int" ? Json(0) : Json(0.0));
    if (value.is_boolean()) {
      result = value.get<bool>() ? 1 : 0;
    } else if (value.is_number()) {
      result = name == "int" ? Json(static_cast<int64_t>(value.get<double>())) : Json(value.get<double>());
      if (name == "int" && value.is_number_integer()) result = value;
    } else if (value.is_string()) {
      const std::string text = Strip(value.get<std::string>(), nullptr, Side::kBoth);
      char* end = nullptr;
      if (name == "int") {
        const long long parsed = std::strtoll(text.c_str(), &end, 10);
        if (!text.empty() && end == text.c_str() + text.size()) result = static_cast<int64_t>(parsed);
      } else {
        const double parsed = std::strtod(text.c_str(), &end);
        if (!text.empty() && end == text.c_str() + text.size()) result = parsed;
      }
    }
    if (name == "float" && result.is_number_integer()) result = static_cast<double>(result.get<int64_t>());
    return result;
  }
  if (name == "abs") {
    if (value.is_number_integer()) return Json(std::llabs(value.get<int64_t>()));
    if (value.is_number()) return Json(std::abs(value.get<double>()));
    return Error(line, StrCat(what, " of ", Described(value)));
  }
  // String filters.
  if (!value.is_string()) return Error(line, StrCat(what, " needs a string, got ", Described(value)));
  const std::string& s = value.get_ref<const std::string&>();
  if (name == "trim") return Json(Strip(s, args.Find(0, "chars"), Side::kBoth));
  if (name == "upper") return Json(MapAscii(s, AsciiUpper));
  if (name == "lower") return Json(MapAscii(s, AsciiLower));
  if (name == "title") return Json(Title(s));
  if (name == "capitalize") {
    std::string out = MapAscii(s, AsciiLower);
    if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
    return Json(out);
  }
  if (name == "replace") {
    STRATA_ASSIGN_OR_RETURN(const std::string* from, StringArgument(args, 0, "old", what, line));
    STRATA_ASSIGN_OR_RETURN(const std::string* to, StringArgument(args, 1, "new", what, line));
    STRATA_ASSIGN_OR_RETURN(int64_t count, IntArgument(args, 2, "count", -1, what, line));
    return Json(Replace(s, *from, *to, count));
  }
  return Error(line, StrCat("no filter named '", name, "'"));
}

absl::StatusOr<bool> ApplyTest(std::string_view name, const Json& v, const Arguments& args, int line) {
  const Json* other = args.Find(0, "value");
  if (name == "defined") return !IsUndefined(v);
  if (name == "undefined") return IsUndefined(v);
  if (name == "none") return v.is_null();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_number_integer();
  if (name == "float") return v.is_number_float();
  if (name == "boolean") return v.is_boolean();
  if (name == "true") return v.is_boolean() && v.get<bool>();
  if (name == "false") return v.is_boolean() && !v.get<bool>();
  if (name == "mapping") return v.is_object();
  if (name == "iterable") return v.is_array() || v.is_object() || v.is_string();
  if (name == "sequence") return v.is_array() || v.is_object() || v.is_string();
  if (name == "callable") return IsFunction(v);
  if (name == "lower" || name == "upper") {
    if (!v.is_string()) return false;
    const std::string& s = v.get_ref<const std::string&>();
    return s == MapAscii(s, name == "lower" ? AsciiLower : AsciiUpper);
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!v.is_number_integer()) return Error(line, StrCat("test '", name, "' needs an integer, got ", Described(v)));
    int64_t divisor = 2;
    if (name == "divisibleby") {
      if (other == nullptr || !other->is_number_integer() || other->get<int64_t>() == 0) {
        return Error(line, "test 'divisibleby' needs a non-zero integer");
      }
      divisor = other->get<int64_t>();
    }
    const bool divisible = v.get<int64_t>() % divisor == 0;
    return name == "odd" ? !divisible : divisible;
  }
  if (other == nullptr) return Error(line, StrCat("test '", name, "' needs an argument"));
  if (name == "in") return Contains(*other, v, line);
  if (name == "sameas") return v == *other && v.type() == other->type();
  return Compare(v, *other, name, line);
}

absl::StatusOr<Json> CallMethod(const Json& object, std::string_view name, const Arguments& args, int line) {
  const std::string what = StrCat("method '.", name, "()'");
  if (object.is_object()) {
    if (name == "items") return ApplyFilter("items", object, {}, line);
    if (name == "keys" || name == "values") {
      Json out = Json::array();
      for (auto it = object.begin(); it != object.end(); ++it)
        out.push_back(name == "keys" ? Json(it.key()) : it.value());
      return out;
    }
    if (name == "get") {
      const Json* key = args.Find(0, "key");
      if (key == nullptr || !key->is_string()) return Error(line, "dict.get() needs a string key");
      auto found = object.find(key->get<std::string>());
      if (found != object.end()) return *found;
      const Json* fallback = args.Find(1, "default");
      return fallback != nullptr ? *fallback : Json(nullptr);
    }
  }
  if (object.is_string()) {
    const std::string& s = object.get_ref<const std::string&>();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const Json* chars = args.Find(0, "chars");
      if (chars != nullptr && !chars->is_null() && !chars->is_string())
        return Error(line, StrCat(what, ": chars must be a string"));
      return Json(Strip(s, chars, name == "strip" ? Side::kBoth : name == "lstrip" ? Side::kLeft : Side::kRight));
    }
    if (name == "split" || name == "rsplit") {
      const Json* separator = args.Find(0, "sep");
      if (separator != nullptr && !separator->is_null() && !separator->is_string()) {
        return Error(line, StrCat(what, ": the separator must be a string"));
      }
      if (separator != nullptr && separator->is_string() && separator->get_ref<const std::string&>().empty()) {
        return Error(line, StrCat(what, ": empty separator"));
      }
      STRATA_ASSIGN_OR_RETURN(int64_t max_splits, IntArgument(args, 1, "maxsplit", -1, what, line));
      if (name == "rsplit" && max_splits >= 0) return Error(line, "rsplit() with maxsplit is not supported");
      return Split(s, separator, max_splits);
    }
    if (name == "startswith" || name == "endswith") {
      const Json* affix = args.Find(0, name == "startswith" ? "prefix" : "suffix");
      if (affix == nullptr) return Error(line, StrCat(what, " needs an argument"));
      std::vector<Json> candidates =
          affix->is_array() ? std::vector<Json>(affix->begin(), affix->end()) : std::vector<Json>{*affix};
      for (const Json& candidate : candidates) {
        if (!candidate.is_string()) return Error(line, StrCat(what, " takes strings"));
        const std::string& a = candidate.get_ref<const std::string&>();
        const bool match =
            a.size() <= s.size() &&
            (name == "startswith" ? s.compare(0, a.size(), a) == 0 : s.compare(s.size() - a.size(), a.size(), a) == 0);
        if (match) return Json(true);
      }
      return Json(false);
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize")
      return ApplyFilter(name, object, {}, line);
    if (name == "replace") return ApplyFilter("replace", object, args, line);
    if (name == "find" || name == "count") {
      STRATA_ASSIGN_OR_RETURN(const std::string* needle, StringArgument(args, 0, "sub", what, line));
      if (name == "find") {
        const size_t at = s.find(*needle);
        if (at == std::string::npos) return Json(-1);
        return Json(static_cast<int64_t>(CodePoints(std::string_view(s).substr(0, at)).size()));
      }
      if (needle->empty()) return Json(static_cast<int64_t>(CodePoints(s).size()) + 1);
      int64_t n = 0;
      for (size_t at = s.find(*needle); at != std::string::npos; at = s.find(*needle, at + needle->size())) ++n;
      return Json(n);
    }
  }
  return Error(line, StrCat(Described(object), " has no method '", name, "'"));
}

}  // namespace strata::frontdoor::jinja
