// Chat templates: the model's own Jinja template (tokenizer_config.json "chat_template"), rendered by a
// small interpreter of the Jinja subset that the chat templates of Llama 3, Qwen2 and Mistral use.
//
// Supported (as Hugging Face renders them: trim_blocks and lstrip_blocks on, `{%-`/`-%}` trimming):
//   statements  {% for x in expr %}...{% else %}...{% endfor %}, {% if %}/{% elif %}/{% else %}/{% endif %},
//               {% set name = expr %}, {{ expr }}, {# comments #}
//   loop        loop.index, loop.index0, loop.first, loop.last, loop.length, loop.revindex, loop.revindex0
//   operators   == != < > <= >= and or not in, `not in`, + (numbers, strings, lists) - * / // % ~,
//               `a if cond else b`, is [not] defined/undefined/none/string/number/mapping/iterable/sequence
//   access      x.attr, x['key'], x[i] (negative from the end), x[a:b]
//   literals    'strings' "strings", integers, true/false/none (and True/False/None), [lists]
//   filters     trim, length, count, upper, lower, string, first, last, items, join(separator)
//   functions   raise_exception(message) (renders as an InvalidArgument error carrying the message), range(n)
//   for         `for a, b in pairs` (e.g. `x | items`)
// Other statements (macro, call, filter blocks, `set` of attributes or blocks) are refused when the template
// is parsed. Other filters, tests, functions and method calls (tojson, namespace(), .strip(), ...) parse,
// so a template that uses them only in branches a plain chat never takes (tools) still runs; evaluating one
// fails with Unimplemented naming it and its line.
//
// Scoping follows Jinja: a `set` inside a for loop does not leak out of it.
#ifndef STRATA_SCHEDULER_FRONTDOOR_CHAT_TEMPLATE_H_
#define STRATA_SCHEDULER_FRONTDOOR_CHAT_TEMPLATE_H_

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
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
  // InvalidArgument naming the line and the construct for a syntax error or an unsupported feature.
  static absl::StatusOr<ChatTemplate> Parse(std::string_view source);

  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;
  ~ChatTemplate();

  // Renders with `variables` (an object: messages, add_generation_prompt, bos_token, eos_token, ...).
  // InvalidArgument for a raise_exception() in the template (its message) or a type error (e.g. adding
  // a string to a number).
  absl::StatusOr<std::string> Render(const nlohmann::json& variables) const;

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
