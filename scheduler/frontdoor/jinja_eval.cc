#include "scheduler/frontdoor/jinja_eval.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <utility>
#include <vector>

#include "common/status.h"

namespace strata::frontdoor::jinja {
namespace {

bool Truthy(const Json& v) {
  if (IsUndefined(v) || v.is_null()) return false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number_integer()) return v.get<int64_t>() != 0;
  if (v.is_number()) return v.get<double>() != 0;
  if (v.is_string()) return !v.get_ref<const std::string&>().empty();
  return !v.empty();
}

std::string TypeName(const Json& v) {
  if (IsUndefined(v)) return "undefined";
  return v.type_name();
}

std::string ToText(const Json& v) {
  if (IsUndefined(v) || v.is_null()) return IsUndefined(v) ? "" : "None";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  return v.dump(-1, ' ', false, Json::error_handler_t::replace);
}

class Scope {
 public:
  explicit Scope(const Json& globals) { frames_.push_back(Json::object()); globals_ = &globals; }
  void Push() { frames_.push_back(Json::object()); }
  void Pop() { frames_.pop_back(); }
  void Set(const std::string& name, Json value) { frames_.back()[name] = std::move(value); }
  Json Get(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
      auto found = it->find(name);
      if (found != it->end()) return *found;
    }
    if (globals_->is_object()) {
      auto found = globals_->find(name);
      if (found != globals_->end()) return *found;
    }
    return Undefined();
  }

 private:
  const Json* globals_;
  std::vector<Json> frames_;
};

class Evaluator {
 public:
  explicit Evaluator(const Json& globals) : scope_(globals) {}

  absl::Status Run(const Body& body, std::string& out) {
    for (const Node& node : body) STRATA_RETURN_IF_ERROR(RunNode(node, out));
    return absl::OkStatus();
  }

 private:
  absl::Status RunNode(const Node& node, std::string& out) {
    switch (node.kind) {
      case NodeKind::kText:
        out += node.text;
        return absl::OkStatus();
      case NodeKind::kOutput: {
        STRATA_ASSIGN_OR_RETURN(Json value, Eval(*node.expr));
        out += ToText(value);
        return absl::OkStatus();
      }
      case NodeKind::kSet: {
        STRATA_ASSIGN_OR_RETURN(Json value, Eval(*node.expr));
        scope_.Set(node.text, std::move(value));
        return absl::OkStatus();
      }
      case NodeKind::kIf:
        for (const auto& [condition, branch] : node.branches) {
          STRATA_ASSIGN_OR_RETURN(Json value, Eval(*condition));
          if (Truthy(value)) return Run(branch, out);
        }
        return Run(node.else_body, out);
      case NodeKind::kFor: {
        STRATA_ASSIGN_OR_RETURN(Json iterable, Eval(*node.expr));
        std::vector<Json> items;
        if (iterable.is_array()) {
          items.assign(iterable.begin(), iterable.end());
        } else if (iterable.is_object()) {
          for (auto it = iterable.begin(); it != iterable.end(); ++it) items.emplace_back(it.key());
        } else if (!IsUndefined(iterable) && !iterable.is_null()) {
          return Error(node.line, StrCat("cannot loop over a ", TypeName(iterable)));
        }
        if (items.empty()) return Run(node.else_body, out);
        const int64_t n = static_cast<int64_t>(items.size());
        for (int64_t i = 0; i < n; ++i) {
          scope_.Push();
          if (node.targets.size() == 1) {
            scope_.Set(node.targets[0], items[i]);
          } else if (items[i].is_array() && items[i].size() == node.targets.size()) {
            for (size_t t = 0; t < node.targets.size(); ++t) scope_.Set(node.targets[t], items[i][t]);
          } else {
            scope_.Pop();
            return Error(node.line, StrCat("cannot unpack a ", TypeName(items[i]), " into ", node.targets.size(), " names"));
          }
          scope_.Set("loop", Json{{"index0", i}, {"index", i + 1}, {"first", i == 0}, {"last", i == n - 1},
                                  {"length", n}, {"revindex", n - i}, {"revindex0", n - i - 1}});
          absl::Status status = Run(node.branches[0].second, out);
          scope_.Pop();
          STRATA_RETURN_IF_ERROR(status);
        }
        return absl::OkStatus();
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Json> Eval(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kLiteral:
        return e.literal;
      case ExprKind::kName:
        return scope_.Get(e.name);
      case ExprKind::kList: {
        Json list = Json::array();
        for (const ExprPtr& item : e.args) {
          STRATA_ASSIGN_OR_RETURN(Json value, Eval(*item));
          list.push_back(std::move(value));
        }
        return list;
      }
      case ExprKind::kAttr: {
        STRATA_ASSIGN_OR_RETURN(Json object, Eval(*e.args[0]));
        if (object.is_object()) {
          auto found = object.find(e.name);
          if (found != object.end()) return *found;
        }
        return Undefined();
      }
      case ExprKind::kItem: {
        STRATA_ASSIGN_OR_RETURN(Json object, Eval(*e.args[0]));
        STRATA_ASSIGN_OR_RETURN(Json index, Eval(*e.args[1]));
        if (object.is_object() && index.is_string()) {
          auto found = object.find(index.get<std::string>());
          return found != object.end() ? *found : Undefined();
        }
        if ((object.is_array() || object.is_string()) && index.is_number_integer()) {
          const int64_t size = object.is_array() ? static_cast<int64_t>(object.size())
                                                 : static_cast<int64_t>(object.get_ref<const std::string&>().size());
          int64_t i = index.get<int64_t>();
          if (i < 0) i += size;
          if (i < 0 || i >= size) return Undefined();
          if (object.is_array()) return object[static_cast<size_t>(i)];
          return Json(std::string(1, object.get_ref<const std::string&>()[static_cast<size_t>(i)]));
        }
        if (IsUndefined(object) || object.is_null()) return Undefined();
        return Error(e.line, StrCat("cannot index a ", TypeName(object), " with a ", TypeName(index)));
      }
      case ExprKind::kSlice: {
        STRATA_ASSIGN_OR_RETURN(Json object, Eval(*e.args[0]));
        if (!object.is_array() && !object.is_string()) return Error(e.line, StrCat("cannot slice a ", TypeName(object)));
        const int64_t size = object.is_array() ? static_cast<int64_t>(object.size())
                                               : static_cast<int64_t>(object.get_ref<const std::string&>().size());
        int64_t bounds[2] = {0, size};
        size_t arg = 1;
        for (int b = 0; b < 2; ++b) {
          if (!e.present[b]) continue;
          STRATA_ASSIGN_OR_RETURN(Json bound, Eval(*e.args[arg++]));
          if (!bound.is_number_integer()) return Error(e.line, "slice bounds must be integers");
          int64_t v = bound.get<int64_t>();
          if (v < 0) v += size;
          bounds[b] = std::clamp<int64_t>(v, 0, size);
        }
        if (object.is_string()) {
          const std::string& s = object.get_ref<const std::string&>();
          return Json(bounds[1] > bounds[0] ? s.substr(bounds[0], bounds[1] - bounds[0]) : "");
        }
        Json out = Json::array();
        for (int64_t i = bounds[0]; i < bounds[1]; ++i) out.push_back(object[static_cast<size_t>(i)]);
        return out;
      }
      case ExprKind::kCall: {
        STRATA_ASSIGN_OR_RETURN(Json arg, Eval(*e.args[0]));
        if (e.name == "raise_exception") return absl::InvalidArgumentError(StrCat("chat template: ", ToText(arg)));
        if (!arg.is_number_integer()) return Error(e.line, "range() takes an integer");
        Json out = Json::array();
        for (int64_t i = 0; i < arg.get<int64_t>(); ++i) out.push_back(i);
        return out;
      }
      case ExprKind::kFilter:
        return Filter(e);
      case ExprKind::kUnsupported:
        return absl::UnimplementedError(
            StrCat("chat template: line ", e.line, ": ", e.name, " is not supported by this chat-template interpreter"));
      case ExprKind::kTest: {
        STRATA_ASSIGN_OR_RETURN(Json v, Eval(*e.args[0]));
        bool result = false;
        if (e.name == "defined") result = !IsUndefined(v);
        else if (e.name == "undefined") result = IsUndefined(v);
        else if (e.name == "none") result = v.is_null();
        else if (e.name == "string") result = v.is_string();
        else if (e.name == "number") result = v.is_number();
        else if (e.name == "integer") result = v.is_number_integer();
        else if (e.name == "boolean") result = v.is_boolean();
        else if (e.name == "mapping") result = v.is_object();
        else if (e.name == "iterable") result = v.is_array() || v.is_object() || v.is_string();
        else if (e.name == "sequence") result = v.is_array() || v.is_string();
        return Json(result != e.negated);
      }
      case ExprKind::kNot: {
        STRATA_ASSIGN_OR_RETURN(Json v, Eval(*e.args[0]));
        return Json(!Truthy(v));
      }
      case ExprKind::kNeg: {
        STRATA_ASSIGN_OR_RETURN(Json v, Eval(*e.args[0]));
        if (v.is_number_integer()) return Json(-v.get<int64_t>());
        if (v.is_number()) return Json(-v.get<double>());
        return Error(e.line, StrCat("cannot negate a ", TypeName(v)));
      }
      case ExprKind::kIf: {
        STRATA_ASSIGN_OR_RETURN(Json condition, Eval(*e.args[0]));
        return Eval(*e.args[Truthy(condition) ? 1 : 2]);
      }
      case ExprKind::kBinary:
        return BinaryOp(e);
    }
    return Undefined();
  }

  absl::StatusOr<Json> Filter(const Expr& e) {
    STRATA_ASSIGN_OR_RETURN(Json v, Eval(*e.args[0]));
    if (e.name == "length" || e.name == "count") {
      if (v.is_string()) return Json(static_cast<int64_t>(v.get_ref<const std::string&>().size()));
      if (v.is_array() || v.is_object()) return Json(static_cast<int64_t>(v.size()));
      return Error(e.line, StrCat("'", e.name, "' of a ", TypeName(v)));
    }
    if (e.name == "items") {
      if (!v.is_object()) return Error(e.line, StrCat("'items' of a ", TypeName(v)));
      Json pairs = Json::array();
      for (auto it = v.begin(); it != v.end(); ++it) pairs.push_back(Json::array({it.key(), it.value()}));
      return pairs;
    }
    if (e.name == "join") {
      if (!v.is_array()) return Error(e.line, StrCat("'join' of a ", TypeName(v)));
      std::string separator;
      if (e.args.size() > 1) {
        STRATA_ASSIGN_OR_RETURN(Json s, Eval(*e.args[1]));
        separator = ToText(s);
      }
      std::string joined;
      for (size_t i = 0; i < v.size(); ++i) joined += (i == 0 ? "" : separator) + ToText(v[i]);
      return Json(joined);
    }
    if (e.name == "first" || e.name == "last") {
      if (!v.is_array()) return Error(e.line, StrCat("'", e.name, "' of a ", TypeName(v)));
      if (v.empty()) return Undefined();
      return e.name == "first" ? v.front() : v.back();
    }
    std::string s = ToText(v);
    if (e.name == "string") return Json(s);
    if (!v.is_string()) return Error(e.line, StrCat("filter '", e.name, "' needs a string, got a ", TypeName(v)));
    if (e.name == "trim") {
      const auto space = [](unsigned char c) { return std::isspace(c) != 0; };
      size_t begin = 0, end = s.size();
      while (begin < end && space(static_cast<unsigned char>(s[begin]))) ++begin;
      while (end > begin && space(static_cast<unsigned char>(s[end - 1]))) --end;
      return Json(s.substr(begin, end - begin));
    }
    for (char& c : s) {
      c = static_cast<char>(e.name == "upper" ? std::toupper(static_cast<unsigned char>(c))
                                              : std::tolower(static_cast<unsigned char>(c)));
    }
    return Json(s);
  }

  absl::StatusOr<Json> BinaryOp(const Expr& e) {
    const std::string& op = e.name;
    STRATA_ASSIGN_OR_RETURN(Json left, Eval(*e.args[0]));
    if (op == "and") {
      if (!Truthy(left)) return left;
      return Eval(*e.args[1]);
    }
    if (op == "or") {
      if (Truthy(left)) return left;
      return Eval(*e.args[1]);
    }
    STRATA_ASSIGN_OR_RETURN(Json right, Eval(*e.args[1]));
    if (IsUndefined(left)) left = nullptr;
    if (IsUndefined(right)) right = nullptr;
    if (op == "==") return Json(left == right);
    if (op == "!=") return Json(left != right);
    if (op == "~") return Json(ToText(left) + ToText(right));
    if (op == "in" || op == "not in") {
      bool found = false;
      if (right.is_string() && left.is_string()) {
        found = right.get_ref<const std::string&>().find(left.get_ref<const std::string&>()) != std::string::npos;
      } else if (right.is_array()) {
        found = std::find(right.begin(), right.end(), left) != right.end();
      } else if (right.is_object() && left.is_string()) {
        found = right.contains(left.get<std::string>());
      } else if (!right.is_null()) {
        return Error(e.line, StrCat("'in' a ", TypeName(right)));
      }
      return Json(found != (op == "not in"));
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      const bool both_numbers = left.is_number() && right.is_number();
      if (!both_numbers && !(left.is_string() && right.is_string())) {
        return Error(e.line, StrCat("cannot compare a ", TypeName(left), " with a ", TypeName(right)));
      }
      if (op == "<") return Json(left < right);
      if (op == ">") return Json(right < left);
      if (op == "<=") return Json(!(right < left));
      return Json(!(left < right));
    }
    if (op == "+" && left.is_string() && right.is_string()) {
      return Json(left.get<std::string>() + right.get<std::string>());
    }
    if (op == "+" && left.is_array() && right.is_array()) {
      Json out = left;
      for (const Json& item : right) out.push_back(item);
      return out;
    }
    if (!left.is_number() || !right.is_number()) {
      return Error(e.line, StrCat("cannot apply '", op, "' to a ", TypeName(left), " and a ", TypeName(right)));
    }
    if (left.is_number_integer() && right.is_number_integer() && op != "/") {
      const int64_t a = left.get<int64_t>(), b = right.get<int64_t>();
      if (op == "+") return Json(a + b);
      if (op == "-") return Json(a - b);
      if (op == "*") return Json(a * b);
      if (b == 0) return Error(e.line, "division by zero");
      // Python's floor semantics.
      const int64_t quotient = a / b - ((a % b != 0) && ((a < 0) != (b < 0)) ? 1 : 0);
      if (op == "//") return Json(quotient);
      return Json(a - quotient * b);
    }
    const double a = left.get<double>(), b = right.get<double>();
    if (op == "+") return Json(a + b);
    if (op == "-") return Json(a - b);
    if (op == "*") return Json(a * b);
    if (b == 0) return Error(e.line, "division by zero");
    if (op == "/") return Json(a / b);
    return Error(e.line, StrCat("'", op, "' on floating-point numbers is not supported"));
  }

  Scope scope_;
};

}  // namespace

absl::Status Render(const Body& body, const Json& variables, std::string& out) {
  Evaluator evaluator(variables);
  return evaluator.Run(body, out);
}

}  // namespace strata::frontdoor::jinja
