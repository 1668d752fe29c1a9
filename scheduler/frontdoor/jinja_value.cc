#include "scheduler/frontdoor/jinja_value.h"

#include <cstdio>

#include "common/status.h"
#include "common/strings.h"

namespace strata::frontdoor::jinja {
namespace {

// The subtype that marks a binary json value as a built-in function.
constexpr std::uint64_t kFunctionSubtype = 0x4a;

std::string ScalarJson(const Json& value) {
  return value.dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
}

absl::Status AppendJson(const Json& value, int indent, int depth, std::string& out) {
  if (IsUndefined(value) || IsFunction(value)) {
    return absl::InvalidArgumentError(StrCat("tojson: ", Described(value), " is not JSON serializable"));
  }
  if (!value.is_array() && !value.is_object()) {
    out += ScalarJson(value);
    return absl::OkStatus();
  }
  const char open = value.is_array() ? '[' : '{';
  const char close = value.is_array() ? ']' : '}';
  out.push_back(open);
  if (value.empty()) {
    out.push_back(close);
    return absl::OkStatus();
  }
  std::string child_padding;
  if (indent > 0) child_padding = StrCat("\n", std::string(static_cast<size_t>(indent * (depth + 1)), ' '));
  bool first = true;
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (!first) out += indent > 0 ? "," : ", ";
    first = false;
    out += child_padding;
    if (value.is_object()) {
      out += ScalarJson(Json(it.key()));
      out += ": ";
    }
    STRATA_RETURN_IF_ERROR(AppendJson(*it, indent, depth + 1, out));
  }
  if (indent > 0) {
    out.push_back('\n');
    out.append(static_cast<size_t>(indent * depth), ' ');
  }
  out.push_back(close);
  return absl::OkStatus();
}

std::string PythonStringRepr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\\' || c == quote) {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      char escaped[5];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", u);
      out += escaped;
    } else {
      out.push_back(c);
    }
  }
  out.push_back(quote);
  return out;
}

}  // namespace

Json FunctionValue(std::string_view name) {
  return Json::binary(std::vector<std::uint8_t>(name.begin(), name.end()), kFunctionSubtype);
}

bool IsFunction(const Json& value) {
  return value.is_binary() && value.get_binary().has_subtype() && value.get_binary().subtype() == kFunctionSubtype;
}

std::string FunctionName(const Json& value) {
  const auto& bytes = value.get_binary();
  return std::string(bytes.begin(), bytes.end());
}

bool Truthy(const Json& value) {
  if (IsUndefined(value) || value.is_null()) return false;
  if (value.is_boolean()) return value.get<bool>();
  if (value.is_number_integer()) return value.get<int64_t>() != 0;
  if (value.is_number()) return value.get<double>() != 0;
  if (value.is_string()) return !value.get_ref<const std::string&>().empty();
  if (value.is_binary()) return true;
  return !value.empty();
}

std::string TypeName(const Json& value) {
  if (IsUndefined(value)) return "undefined";
  if (IsFunction(value)) return "function";
  if (value.is_null()) return "none";
  if (value.is_boolean()) return "boolean";
  if (value.is_number_integer()) return "integer";
  if (value.is_number()) return "float";
  if (value.is_string()) return "string";
  if (value.is_array()) return "list";
  if (value.is_object()) return "dict";
  return value.type_name();
}

std::string Described(const Json& value) {
  const std::string name = TypeName(value);
  return StrCat(name.find_first_of("aeiou") == 0 ? "an " : "a ", name);
}

std::string ToText(const Json& value) {
  if (IsUndefined(value)) return "";
  if (value.is_string()) return value.get<std::string>();
  return ToRepr(value);
}

std::string ToRepr(const Json& value) {
  if (IsUndefined(value)) return "Undefined";
  if (IsFunction(value)) return StrCat("<built-in function ", FunctionName(value), ">");
  if (value.is_null()) return "None";
  if (value.is_boolean()) return value.get<bool>() ? "True" : "False";
  if (value.is_string()) return PythonStringRepr(value.get<std::string>());
  if (value.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < value.size(); ++i) {
      if (i > 0) out += ", ";
      out += ToRepr(value[i]);
    }
    return out + "]";
  }
  if (value.is_object()) {
    std::string out = "{";
    bool first = true;
    for (auto it = value.begin(); it != value.end(); ++it) {
      if (!first) out += ", ";
      out += PythonStringRepr(it.key());
      out += ": ";
      out += ToRepr(it.value());
      first = false;
    }
    return out + "}";
  }
  return ScalarJson(value);  // numbers: nlohmann prints floats as Python's repr does (1.0, 0.1)
}

absl::StatusOr<std::string> ToJson(const Json& value, int indent) {
  std::string out;
  STRATA_RETURN_IF_ERROR(AppendJson(value, indent, 0, out));
  return out;
}

std::vector<std::string_view> CodePoints(std::string_view text) {
  std::vector<std::string_view> out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    size_t length = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xe ? 3 : (lead >> 3) == 0x1e ? 4 : 1;
    if (i + length > text.size()) length = 1;
    for (size_t k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xc0) != 0x80) {
        length = 1;
        break;
      }
    }
    out.push_back(text.substr(i, length));
    i += length;
  }
  return out;
}

}  // namespace strata::frontdoor::jinja
