#include "scheduler/frontdoor/jinja_eval.h"

#include <algorithm>
#include <cstdint>
#include <ctime>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "common/status.h"
#include "scheduler/frontdoor/jinja_builtins.h"

namespace strata::frontdoor::jinja {
namespace {

constexpr std::string_view kFunctions[] = {"raise_exception", "range", "namespace", "strftime_now"};

bool IsBuiltinFunction(std::string_view name) {
  return std::find(std::begin(kFunctions), std::end(kFunctions), name) != std::end(kFunctions);
}

// Variables: the caller's globals (read-only), under one frame per for-loop iteration (Jinja: a `set`
// inside a loop does not leak out of it) and the template's top-level frame.
class Scope {
 public:
  explicit Scope(const Json& globals) : globals_(&globals) { frames_.push_back(Json::object()); }
  void Push() { frames_.push_back(Json::object()); }
  void Pop() { frames_.pop_back(); }
  void Set(const std::string& name, Json value) { frames_.back()[name] = std::move(value); }
  const Json* Find(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
      auto found = it->find(name);
      if (found != it->end()) return &*found;
    }
    if (globals_->is_object()) {
      auto found = globals_->find(name);
      if (found != globals_->end()) return &*found;
    }
    return nullptr;
  }
  // `{% set name.attribute = value %}`: the namespace is changed where it lives, so a loop can carry a
  // value out of itself (what namespace() is for). A namespace the caller passed is copied into the
  // template's top-level frame first: the caller's variables are never changed.
  absl::Status SetAttribute(const std::string& name, const std::string& attribute, Json value, int line) {
    Json* target = nullptr;
    for (auto it = frames_.rbegin(); it != frames_.rend() && target == nullptr; ++it) {
      auto found = it->find(name);
      if (found != it->end()) target = &*found;
    }
    if (target == nullptr) {
      const Json* global = Find(name);
      if (global == nullptr) return Error(line, StrCat("cannot set an attribute of '", name, "': it is undefined"));
      frames_.front()[name] = *global;
      target = &frames_.front()[name];
    }
    if (!target->is_object()) {
      return Error(line, StrCat("cannot set an attribute of '", name, "', ", Described(*target), " (use namespace())"));
    }
    (*target)[attribute] = std::move(value);
    return absl::OkStatus();
  }

 private:
  const Json* globals_;
  std::vector<Json> frames_;
};

// What a `{% break %}` or `{% continue %}` asks of the loop around it.
enum class Control { kNone, kBreak, kContinue };

class Evaluator {
 public:
  Evaluator(const Json& globals, absl::Time now) : scope_(globals), now_(now) {}

  absl::Status Run(const Body& body, std::string& out) {
    for (const Node& node : body) {
      STRATA_RETURN_IF_ERROR(RunNode(node, out));
      if (control_ != Control::kNone) break;
    }
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
        Json value;
        if (node.expr == nullptr) {
          std::string captured;
          STRATA_RETURN_IF_ERROR(Run(node.branches[0].second, captured));
          value = std::move(captured);
        } else {
          STRATA_ASSIGN_OR_RETURN(value, Eval(*node.expr));
        }
        if (!node.attribute.empty()) return scope_.SetAttribute(node.text, node.attribute, std::move(value), node.line);
        scope_.Set(node.text, std::move(value));
        return absl::OkStatus();
      }
      case NodeKind::kIf:
        for (const auto& [condition, branch] : node.branches) {
          STRATA_ASSIGN_OR_RETURN(Json value, Eval(*condition));
          if (Truthy(value)) return Run(branch, out);
        }
        return Run(node.else_body, out);
      case NodeKind::kFor:
        return RunFor(node, out);
      case NodeKind::kBreak:
        control_ = Control::kBreak;
        return absl::OkStatus();
      case NodeKind::kContinue:
        control_ = Control::kContinue;
        return absl::OkStatus();
    }
    return absl::OkStatus();
  }

  // Binds one item to the loop's target names.
  absl::Status Bind(const Node& node, const Json& item) {
    if (node.targets.size() == 1) {
      scope_.Set(node.targets[0], item);
      return absl::OkStatus();
    }
    if (!item.is_array() || item.size() != node.targets.size()) {
      return Error(node.line, StrCat("cannot unpack ", Described(item), " into ", node.targets.size(), " names"));
    }
    for (size_t t = 0; t < node.targets.size(); ++t) scope_.Set(node.targets[t], item[t]);
    return absl::OkStatus();
  }

  absl::Status RunFor(const Node& node, std::string& out) {
    STRATA_ASSIGN_OR_RETURN(Json iterable, Eval(*node.expr));
    std::vector<Json> items;
    if (iterable.is_array()) {
      items.assign(iterable.begin(), iterable.end());
    } else if (iterable.is_object()) {
      for (auto it = iterable.begin(); it != iterable.end(); ++it) items.emplace_back(it.key());
    } else if (iterable.is_string()) {
      for (std::string_view cp : CodePoints(iterable.get_ref<const std::string&>()))
        items.emplace_back(std::string(cp));
    } else if (!IsUndefined(iterable) && !iterable.is_null()) {
      return Error(node.line, StrCat("cannot loop over ", Described(iterable)));
    }
    if (node.filter != nullptr) {
      // Jinja filters before the loop runs: `loop` counts only the items kept.
      std::vector<Json> kept;
      for (const Json& item : items) {
        scope_.Push();
        absl::Status bound = Bind(node, item);
        absl::StatusOr<Json> keep = bound.ok() ? Eval(*node.filter) : absl::StatusOr<Json>(bound);
        scope_.Pop();
        STRATA_RETURN_IF_ERROR(keep.status());
        if (Truthy(*keep)) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) return Run(node.else_body, out);
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      scope_.Push();
      absl::Status status = Bind(node, items[static_cast<size_t>(i)]);
      if (status.ok()) {
        Json loop = {{"index0", i}, {"index", i + 1},    {"first", i == 0},        {"last", i == n - 1},
                     {"length", n}, {"revindex", n - i}, {"revindex0", n - i - 1}, {"depth", 1},
                     {"depth0", 0}};
        if (i > 0) loop["previtem"] = items[static_cast<size_t>(i - 1)];
        if (i + 1 < n) loop["nextitem"] = items[static_cast<size_t>(i + 1)];
        scope_.Set("loop", std::move(loop));
        status = Run(node.branches[0].second, out);
      }
      scope_.Pop();
      STRATA_RETURN_IF_ERROR(status);
      const Control control = control_;
      control_ = Control::kNone;
      if (control == Control::kBreak) break;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Arguments> EvalArguments(const Expr& e, size_t first) {
    Arguments args;
    for (size_t i = first; i < e.args.size(); ++i) {
      STRATA_ASSIGN_OR_RETURN(Json value, Eval(*e.args[i]));
      const std::string& keyword = e.keywords[i - first];
      if (keyword.empty()) {
        args.positional.push_back(std::move(value));
      } else {
        args.keyword.emplace_back(keyword, std::move(value));
      }
    }
    return args;
  }

  // The stored value an expression names (a variable, or an attribute or item of one), without copying it:
  // `messages[i].role` inside a loop must not copy the whole conversation per access. nullptr when the
  // expression computes a new value; the pointer is valid until the next statement runs.
  absl::StatusOr<const Json*> Lookup(const Expr& e) {
    static const Json* const kUndefined = new Json(Undefined());
    if (e.kind == ExprKind::kName) return scope_.Find(e.name);
    if (e.kind != ExprKind::kAttr && e.kind != ExprKind::kItem) return nullptr;
    STRATA_ASSIGN_OR_RETURN(const Json* object, Lookup(*e.args[0]));
    if (object == nullptr) return nullptr;
    if (e.kind == ExprKind::kAttr) {
      if (!object->is_object()) return kUndefined;
      auto found = object->find(e.name);
      return found != object->end() ? &*found : kUndefined;
    }
    STRATA_ASSIGN_OR_RETURN(Json index, Eval(*e.args[1]));
    if (object->is_object() && index.is_string()) {
      auto found = object->find(index.get_ref<const std::string&>());
      return found != object->end() ? &*found : kUndefined;
    }
    if (object->is_array() && index.is_number_integer()) {
      int64_t i = index.get<int64_t>();
      const int64_t size = static_cast<int64_t>(object->size());
      if (i < 0) i += size;
      return i >= 0 && i < size ? &(*object)[static_cast<size_t>(i)] : kUndefined;
    }
    return nullptr;  // strings, bad indexes: Eval says what they give
  }

  // `e`'s value, borrowed where Lookup finds it stored, else computed into `storage`.
  absl::StatusOr<const Json*> Borrow(const Expr& e, Json& storage) {
    STRATA_ASSIGN_OR_RETURN(const Json* found, Lookup(e));
    if (found != nullptr) return found;
    STRATA_ASSIGN_OR_RETURN(storage, Eval(e));
    return &storage;
  }

  absl::StatusOr<Json> Eval(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kLiteral:
        return e.literal;
      case ExprKind::kName: {
        const Json* value = scope_.Find(e.name);
        if (value != nullptr) return *value;
        if (IsBuiltinFunction(e.name)) return FunctionValue(e.name);
        return Undefined();
      }
      case ExprKind::kList: {
        Json list = Json::array();
        for (const ExprPtr& item : e.args) {
          STRATA_ASSIGN_OR_RETURN(Json value, Eval(*item));
          list.push_back(std::move(value));
        }
        return list;
      }
      case ExprKind::kDict: {
        Json dict = Json::object();
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          STRATA_ASSIGN_OR_RETURN(Json key, Eval(*e.args[i]));
          STRATA_ASSIGN_OR_RETURN(Json value, Eval(*e.args[i + 1]));
          if (!key.is_string()) return Error(e.line, StrCat("dict keys must be strings here, got ", Described(key)));
          dict[key.get<std::string>()] = std::move(value);
        }
        return dict;
      }
      case ExprKind::kAttr: {
        Json storage;
        STRATA_ASSIGN_OR_RETURN(const Json* object, Borrow(*e.args[0], storage));
        if (object->is_object()) {
          auto found = object->find(e.name);
          if (found != object->end()) return *found;
        }
        return Undefined();
      }
      case ExprKind::kItem: {
        STRATA_ASSIGN_OR_RETURN(const Json* found, Lookup(e));
        if (found != nullptr) return *found;
        return Item(e);
      }
      case ExprKind::kSlice:
        return Slice(e);
      case ExprKind::kCall:
        return Call(e);
      case ExprKind::kMethod: {
        Json storage;
        STRATA_ASSIGN_OR_RETURN(const Json* object, Borrow(*e.args[0], storage));
        STRATA_ASSIGN_OR_RETURN(Arguments args, EvalArguments(e, 1));
        return CallMethod(*object, e.name, args, e.line);
      }
      case ExprKind::kFilter: {
        Json storage;
        STRATA_ASSIGN_OR_RETURN(const Json* value, Borrow(*e.args[0], storage));
        STRATA_ASSIGN_OR_RETURN(Arguments args, EvalArguments(e, 1));
        return ApplyFilter(e.name, *value, args, e.line);
      }
      case ExprKind::kTest: {
        Json storage;
        STRATA_ASSIGN_OR_RETURN(const Json* value, Borrow(*e.args[0], storage));
        STRATA_ASSIGN_OR_RETURN(Arguments args, EvalArguments(e, 1));
        STRATA_ASSIGN_OR_RETURN(bool result, ApplyTest(e.name, *value, args, e.line));
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
        return Error(e.line, StrCat("cannot negate ", Described(v)));
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

  absl::StatusOr<Json> Item(const Expr& e) {
    STRATA_ASSIGN_OR_RETURN(Json object, Eval(*e.args[0]));
    STRATA_ASSIGN_OR_RETURN(Json index, Eval(*e.args[1]));
    if (object.is_object()) {
      if (!index.is_string()) return Undefined();
      auto found = object.find(index.get<std::string>());
      return found != object.end() ? *found : Undefined();
    }
    if ((object.is_array() || object.is_string()) && index.is_number_integer()) {
      std::vector<std::string_view> cps;
      if (object.is_string()) cps = CodePoints(object.get_ref<const std::string&>());
      const int64_t size = static_cast<int64_t>(object.is_array() ? object.size() : cps.size());
      int64_t i = index.get<int64_t>();
      if (i < 0) i += size;
      if (i < 0 || i >= size) return Undefined();
      if (object.is_array()) return object[static_cast<size_t>(i)];
      return Json(std::string(cps[static_cast<size_t>(i)]));
    }
    if (IsUndefined(object) || object.is_null()) return Undefined();
    return Error(e.line, StrCat("cannot index ", Described(object), " with ", Described(index)));
  }

  absl::StatusOr<Json> Slice(const Expr& e) {
    STRATA_ASSIGN_OR_RETURN(Json object, Eval(*e.args[0]));
    if (!object.is_array() && !object.is_string()) return Error(e.line, StrCat("cannot slice ", Described(object)));
    std::vector<std::string_view> cps;
    if (object.is_string()) cps = CodePoints(object.get_ref<const std::string&>());
    const int64_t size = static_cast<int64_t>(object.is_array() ? object.size() : cps.size());
    int64_t bounds[2] = {0, size};
    size_t arg = 1;
    for (int b = 0; b < 2; ++b) {
      if (!e.present[b]) continue;
      STRATA_ASSIGN_OR_RETURN(Json bound, Eval(*e.args[arg++]));
      if (bound.is_null()) continue;
      if (!bound.is_number_integer()) return Error(e.line, "slice bounds must be integers");
      int64_t v = bound.get<int64_t>();
      if (v < 0) v += size;
      bounds[b] = std::clamp<int64_t>(v, 0, size);
    }
    if (object.is_string()) {
      std::string out;
      for (int64_t i = bounds[0]; i < bounds[1]; ++i) out += cps[static_cast<size_t>(i)];
      return Json(out);
    }
    Json out = Json::array();
    for (int64_t i = bounds[0]; i < bounds[1]; ++i) out.push_back(object[static_cast<size_t>(i)]);
    return out;
  }

  absl::StatusOr<Json> Call(const Expr& e) {
    const Json* bound = scope_.Find(e.name);
    if (bound != nullptr && !IsFunction(*bound)) {
      return Error(e.line, StrCat("'", e.name, "' is ", Described(*bound), ", not a function"));
    }
    const std::string name = bound != nullptr ? FunctionName(*bound) : e.name;
    if (!IsBuiltinFunction(name)) return Error(e.line, StrCat("'", e.name, "' is undefined (no such function)"));
    STRATA_ASSIGN_OR_RETURN(Arguments args, EvalArguments(e, 0));
    if (name == "namespace") {
      Json ns = Json::object();
      for (const Json& positional : args.positional) {
        if (!positional.is_object()) return Error(e.line, "namespace() takes a dict or name=value arguments");
        for (auto it = positional.begin(); it != positional.end(); ++it) ns[it.key()] = it.value();
      }
      for (auto& [key, value] : args.keyword) ns[key] = value;
      return ns;
    }
    if (name == "raise_exception") {
      const Json* message = args.Find(0, "message");
      return absl::InvalidArgumentError(StrCat("chat template: ", message != nullptr ? ToText(*message) : ""));
    }
    if (name == "strftime_now") {
      const Json* format = args.Find(0, "format");
      if (format == nullptr || !format->is_string()) return Error(e.line, "strftime_now() takes a format string");
      // Python's datetime.now(): local time.
      const std::time_t seconds = absl::ToTimeT(now_);
      std::tm local{};
      localtime_r(&seconds, &local);
      char buffer[256];
      const size_t length =
          std::strftime(buffer, sizeof(buffer), format->get_ref<const std::string&>().c_str(), &local);
      return Json(std::string(buffer, length));
    }
    // range([start,] stop[, step])
    if (args.positional.empty() || args.positional.size() > 3 ||
        !std::all_of(args.positional.begin(), args.positional.end(),
                     [](const Json& v) { return v.is_number_integer(); })) {
      return Error(e.line, "range() takes one to three integers");
    }
    int64_t start = 0, stop = 0, step = 1;
    if (args.positional.size() == 1) {
      stop = args.positional[0].get<int64_t>();
    } else {
      start = args.positional[0].get<int64_t>();
      stop = args.positional[1].get<int64_t>();
      if (args.positional.size() == 3) step = args.positional[2].get<int64_t>();
    }
    if (step == 0) return Error(e.line, "range() step must not be zero");
    constexpr int64_t kMaxRange = 1 << 20;
    Json out = Json::array();
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (static_cast<int64_t>(out.size()) >= kMaxRange) return Error(e.line, "range() longer than 1048576 items");
      out.push_back(i);
    }
    return out;
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
    if (op == "==" || op == "!=") {
      // Jinja's Undefined equals only Undefined.
      const bool equal =
          IsUndefined(left) || IsUndefined(right) ? IsUndefined(left) && IsUndefined(right) : left == right;
      return Json(equal == (op == "=="));
    }
    if (op == "~") return Json(ToText(left) + ToText(right));
    if (op == "in" || op == "not in") {
      STRATA_ASSIGN_OR_RETURN(bool found, Contains(right, left, e.line));
      return Json(found != (op == "not in"));
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      STRATA_ASSIGN_OR_RETURN(bool result, ApplyTest(op, left, Arguments{{right}, {}}, e.line));
      return Json(result);
    }
    if (op == "+" && left.is_string() && right.is_string()) {
      return Json(left.get<std::string>() + right.get<std::string>());
    }
    if (op == "+" && left.is_array() && right.is_array()) {
      Json out = left;
      for (const Json& item : right) out.push_back(item);
      return out;
    }
    if (op == "*" && (left.is_string() || left.is_array()) && right.is_number_integer()) {
      Json out = left.is_string() ? Json("") : Json::array();
      for (int64_t i = 0; i < right.get<int64_t>(); ++i) {
        if (left.is_string())
          out.get_ref<std::string&>() += left.get_ref<const std::string&>();
        else
          for (const Json& item : left) out.push_back(item);
      }
      return out;
    }
    if (left.is_boolean()) left = left.get<bool>() ? 1 : 0;
    if (right.is_boolean()) right = right.get<bool>() ? 1 : 0;
    if (!left.is_number() || !right.is_number()) {
      return Error(e.line, StrCat("cannot apply '", op, "' to ", Described(left), " and ", Described(right)));
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
  absl::Time now_;
  Control control_ = Control::kNone;
};

}  // namespace

absl::Status Render(const Body& body, const Json& variables, absl::Time now, std::string& out) {
  Evaluator evaluator(variables, now);
  return evaluator.Run(body, out);
}

}  // namespace strata::frontdoor::jinja
