// Chat templates: the model's own Jinja template (tokenizer_config.json "chat_template"), rendered by a
// small interpreter of the Jinja that chat templates use, as Hugging Face's apply_chat_template renders it:
// trim_blocks and lstrip_blocks on, `{%-`/`-%}` trimming, loop controls, raise_exception and strftime_now.
// It matches Jinja2 (tests/data/chat_templates/golden.json) and @huggingface/jinja (the differential test)
// byte for byte on the templates of Llama 3, 3.1 and 3.2, Qwen2 and 2.5, Mistral v0.1 and v0.3 and the
// DeepSeek-R1 distills.
//
// Supported:
//   statements  {% for x in expr [if cond] %}...{% else %}...{% endfor %}, {% break %}, {% continue %},
//               {% if %}/{% elif %}/{% else %}/{% endif %}, {% set name = expr %}, {% set ns.attr = expr %},
//               {% set name %}...{% endset %}, {{ expr }}, {# comments #}
//   loop        index, index0, first, last, length, revindex, revindex0, previtem, nextitem, depth, depth0
//   operators   == != < > <= >= and or not in, `not in`, + (numbers, strings, lists) - * (also string * n) / // %
//               ~, `a if cond else b`, `x is [not] test`
//   access      x.attr, x['key'], x[i] (negative from the end), x[a:b]; strings by code point, as Python
//   literals    'strings' "strings", integers, floats, true/false/none (and True/False/None), [lists], {dicts},
//               (tuples) (held as lists)
//   filters     trim, length, count, first, last, join(sep, attribute), default/d(value, boolean), map(attribute=
//               or filter), select, reject, selectattr, rejectattr, list, string, int, float, abs, tojson(indent),
//               items, upper, lower, title, capitalize, replace
//   tests       defined, undefined, none, string, number, integer, float, boolean, true, false, mapping,
//               iterable, sequence, callable, in, equalto/eq/==, ne/!=, lt/<, le/<=, gt/>, ge/>=, sameas, odd,
//               even, divisibleby, lower, upper
//   methods     str: strip, lstrip, rstrip, split, rsplit, startswith, endswith, upper, lower, title, capitalize,
//               replace, find, count; dict: items, keys, values, get
//   functions   raise_exception(message) (an InvalidArgument error carrying the message), range(...),
//               namespace(...), strftime_now(format)
// A dict keeps its keys in the order they came (tojson and items print them so, as Python does).
// Unknown statements, filters and tests are refused when the template is parsed (as Jinja refuses them when
// it compiles one); calling an unknown function or method fails when evaluated. Not supported: macros,
// call and filter blocks, tuple assignment, `**`, list.append and other mutating methods (Hugging Face's
// sandbox refuses those too), Unicode case mapping (upper/lower/title map ASCII letters only).
//
// Scoping follows Jinja: a `set` inside a for loop does not leak out of it; a namespace's attributes do.
#ifndef STRATA_SCHEDULER_FRONTDOOR_CHAT_TEMPLATE_H_
#define STRATA_SCHEDULER_FRONTDOOR_CHAT_TEMPLATE_H_

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace strata::frontdoor {

// Used when the model directory has no chat template: one `role: content` line per message after the
// BOS token, then `assistant:` when a generation prompt is asked for. Plain text, so any tokenizer
// encodes it.
inline constexpr std::string_view kFallbackChatTemplate =
    "{{ bos_token }}{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}";

// A parsed template. Immutable after Parse; Render is const and thread-safe. Movable.
class ChatTemplate {
 public:
  // InvalidArgument naming the line and the construct for a syntax error or an unsupported statement,
  // filter or test.
  static absl::StatusOr<ChatTemplate> Parse(std::string_view source);

  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;
  ~ChatTemplate();

  // Renders with `variables` (an object: messages, add_generation_prompt, bos_token, eos_token, tools, ...),
  // whose dicts keep their key order (an nlohmann::json converts, with its keys sorted). strftime_now()
  // formats `now` (the first overload: the current time). InvalidArgument for a raise_exception() in the
  // template (its message), a type error (e.g. adding a string to a number) or a call of an unknown
  // function or method.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& variables) const;
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& variables, absl::Time now) const;

 private:
  struct Program;
  explicit ChatTemplate(std::unique_ptr<Program> program);
  std::unique_ptr<Program> program_;
};

// What a model directory says about chat formatting.
struct ChatFormat {
  std::string source;     // the template text
  bool fallback = false;  // true: the directory had none, `source` is kFallbackChatTemplate
  std::string bos_token;  // text of the special tokens the template may print
  std::string eos_token;
};

// Reads `dir`/tokenizer_config.json when present: `chat_template` (a string, or a list of {name,
// template} of which "default" is taken), `bos_token` and `eos_token` (strings or {"content": ...}).
// Missing tokens are filled from `bos_fallback` / `eos_fallback` (the caller takes them from config.json
// and the tokenizer). InvalidArgument for a malformed file.
absl::StatusOr<ChatFormat> LoadChatFormat(const std::filesystem::path& dir, std::string bos_fallback,
                                          std::string eos_fallback);

}  // namespace strata::frontdoor

#endif  // STRATA_SCHEDULER_FRONTDOOR_CHAT_TEMPLATE_H_
