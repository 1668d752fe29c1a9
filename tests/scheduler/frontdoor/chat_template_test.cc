// The chat-template interpreter on the real templates of Llama 3, Qwen2 and Mistral
// (tests/data/chat_templates/), on Jinja's whitespace rules as Hugging Face sets them, on each filter, test,
// method and statement it supports (expected strings: what Jinja2 renders), and its refusals.
// jinja_differential_test.cc compares it with @huggingface/jinja on five more templates.
#include "scheduler/frontdoor/chat_template.h"

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <memory>
#include <string>

#include "absl/time/civil_time.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/frontdoor/served_model.h"
#include "tests/testing/scratch_dir.h"

namespace strata::frontdoor {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::ordered_json;

const std::string kData = STRATA_TEST_DATA_DIR;

Json Chat(bool system, bool generation_prompt, const ChatFormat& format) {
  Json messages = Json::array();
  if (system) messages.push_back({{"role", "system"}, {"content", "You are terse."}});
  messages.push_back({{"role", "user"}, {"content", "Hello, how are you?"}});
  messages.push_back({{"role", "assistant"}, {"content", "I'm doing great. How can I help you today?"}});
  messages.push_back({{"role", "user"}, {"content", "I'd like to show off how chat templating works!"}});
  return Json{{"messages", messages},
              {"add_generation_prompt", generation_prompt},
              {"bos_token", format.bos_token},
              {"eos_token", format.eos_token}};
}

absl::StatusOr<std::string> RenderDir(const std::string& dir, const Json& variables) {
  absl::StatusOr<ChatFormat> format = LoadChatFormat(kData + "/chat_templates/" + dir, "?", "?");
  if (!format.ok()) return format.status();
  absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(format->source);
  if (!parsed.ok()) return parsed.status();
  return parsed->Render(variables);
}

ChatFormat FormatOf(const std::string& dir) {
  absl::StatusOr<ChatFormat> format = LoadChatFormat(kData + "/chat_templates/" + dir, "BOS?", "EOS?");
  EXPECT_TRUE(format.ok()) << format.status();
  return format.ok() ? *format : ChatFormat{};
}

TEST(ChatTemplate, Llama3HeadersTrimmedContentAndBosOnTheFirstMessage) {
  const ChatFormat format = FormatOf("llama3");
  EXPECT_EQ(format.bos_token, "<|begin_of_text|>");
  EXPECT_FALSE(format.fallback);
  Json variables = Chat(true, true, format);
  variables["messages"][1]["content"] = "  Hello, how are you?\n";  // `| trim` applies to the content
  absl::StatusOr<std::string> text = RenderDir("llama3", variables);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHello, how are you?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nI'm doing great. How can I help you today?<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nI'd like to show off how chat templating works!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, Qwen2AddsTheDefaultSystemPromptOnlyWhenNoneIsGiven) {
  const ChatFormat format = FormatOf("qwen2");
  EXPECT_EQ(format.bos_token, "BOS?");  // null in the file: the caller's fallback stays
  EXPECT_EQ(format.eos_token, "<|im_end|>");
  absl::StatusOr<std::string> without = RenderDir("qwen2", Chat(false, true, format));
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_EQ(*without,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHello, how are you?<|im_end|>\n"
            "<|im_start|>assistant\nI'm doing great. How can I help you today?<|im_end|>\n"
            "<|im_start|>user\nI'd like to show off how chat templating works!<|im_end|>\n"
            "<|im_start|>assistant\n");
  absl::StatusOr<std::string> with = RenderDir("qwen2", Chat(true, false, format));
  ASSERT_TRUE(with.ok()) << with.status();
  EXPECT_EQ(with->rfind("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user", 0), 0u);
  EXPECT_EQ(with->find("helpful assistant"), std::string::npos);
  EXPECT_EQ(with->substr(with->size() - 11), "<|im_end|>\n");  // no generation prompt
}

TEST(ChatTemplate, MistralMatchesTheReferenceRenderingAndRaisesOnBadRoles) {
  const ChatFormat format = FormatOf("mistral");
  absl::StatusOr<std::string> text = RenderDir("mistral", Chat(false, false, format));
  ASSERT_TRUE(text.ok()) << text.status();
  // text-generation-inference's reference output for this template and conversation.
  EXPECT_EQ(*text,
            "<s>[INST] Hello, how are you? [/INST]I'm doing great. How can I help you today?</s> [INST] I'd like "
            "to show off how chat templating works! [/INST]");
  absl::StatusOr<std::string> system = RenderDir("mistral", Chat(true, false, format));
  ASSERT_FALSE(system.ok());
  EXPECT_EQ(system.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(system.status().message(), HasSubstr("Conversation roles must alternate user/assistant"));
}

TEST(ChatTemplate, TrimBlocksAndLstripBlocksAsHuggingFaceRenders) {
  // Zephyr's template: newlines after block tags vanish (trim_blocks); indentation before them too.
  const std::string zephyr =
      "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + "
      "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + eos_token }}\n"
      "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n"
      "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";
  absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(zephyr);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  Json variables = {{"messages",
                     {{{"role", "system"}, {"content", "You are a pirate"}}, {{"role", "user"}, {"content", "Hi"}}}},
                    {"add_generation_prompt", true},
                    {"eos_token", "</s>"}};
  absl::StatusOr<std::string> text = parsed->Render(variables);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "<|system|>\nYou are a pirate</s>\n<|user|>\nHi</s>\n<|assistant|>\n");

  absl::StatusOr<ChatTemplate> indented = ChatTemplate::Parse("A\n    {% if true %}\n    x\n    {% endif %}\nB");
  ASSERT_TRUE(indented.ok()) << indented.status();
  EXPECT_EQ(*indented->Render(Json::object()), "A\n    x\nB");
  absl::StatusOr<ChatTemplate> minus = ChatTemplate::Parse("a  {{- ' b ' -}}  \n c {#- note -#} d");
  ASSERT_TRUE(minus.ok()) << minus.status();
  EXPECT_EQ(*minus->Render(Json::object()), "a b cd");
}

TEST(ChatTemplate, ExpressionsLoopsAndScoping) {
  const std::string source =
      "{% set n = 0 %}{% for m in messages %}{% set n = n + 1 %}{{ loop.index }}/{{ loop.length }}"
      "{% if loop.first %}F{% elif loop.last %}L{% else %}M{% endif %}{{ m.role[0] | upper }}"
      "{{ ',' if not loop.last }}{% endfor %};n={{ n }};{{ messages | length }};{{ messages[-1]['content'] }};"
      "{{ 'x' in 'yxz' }}{{ 'q' not in ['a'] }};{{ 7 // 2 }}{{ -7 % 3 }}{{ 'a' ~ 1 }};{{ missing is defined }}"
      "{{ messages[1:] | length }}{% for x in [] %}no{% else %}empty{% endfor %}";
  absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(source);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  Json variables = {{"messages",
                     {{{"role", "user"}, {"content", "a"}},
                      {{"role", "assistant"}, {"content", "b"}},
                      {{"role", "user"}, {"content", "c"}}}}};
  absl::StatusOr<std::string> text = parsed->Render(variables);
  ASSERT_TRUE(text.ok()) << text.status();
  // Jinja: `set` inside a loop does not leak out of it, so n stays 0.
  EXPECT_EQ(*text, "1/3FU,2/3MA,3/3LU;n=0;3;c;TrueTrue;32a1;False2empty");
}

// Every case of golden.json: what Jinja2 itself renders (make_golden.py, configured as Hugging Face's
// apply_chat_template), byte for byte, and an error wherever Jinja2 raised.
TEST(ChatTemplate, MatchesJinja2OnTheGoldenCases) {
  std::ifstream file(kData + "/chat_templates/golden.json");
  const Json golden = Json::parse(file);
  ASSERT_GE(golden["cases"].size(), 100u);
  for (const Json& c : golden["cases"]) {
    const std::string name = c["name"];
    std::string source;
    if (c.contains("dir")) {
      absl::StatusOr<ChatFormat> format = LoadChatFormat(kData + "/chat_templates/" + c["dir"].get<std::string>(), "", "");
      ASSERT_TRUE(format.ok()) << name << ": " << format.status();
      source = format->source;
    } else {
      source = c["template"];
    }
    absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(source);
    ASSERT_TRUE(parsed.ok()) << name << ": " << parsed.status();
    absl::StatusOr<std::string> text = parsed->Render(c["variables"]);
    if (c.contains("error")) {
      EXPECT_FALSE(text.ok()) << name << " rendered where Jinja2 raised: " << *text;
      // The template's own raise_exception("..."): the same message (Python's TypeErrors are worded otherwise).
      if (source.find(c["error"].get<std::string>()) != std::string::npos) {
        EXPECT_THAT(text.status().message(), HasSubstr(c["error"].get<std::string>())) << name;
      }
      continue;
    }
    ASSERT_TRUE(text.ok()) << name << ": " << text.status();
    EXPECT_EQ(*text, c["expected"].get<std::string>()) << name;
  }
}

// The variables of the feature tests below: a conversation and a tool whose keys are not sorted.
Json Variables() {
  return Json::parse(R"({
    "messages": [{"role": "system", "content": " sys "}, {"role": "user", "content": "Hi there"},
                 {"role": "assistant", "content": "<think>hmm</think>Hello!"}, {"role": "user", "content": "Bye"}],
    "tool": {"name": "f", "description": "Wetter — heute",
             "parameters": {"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "string"}},
                            "required": []}}})");
}

// Each source with what Jinja2 renders for it (configured as Hugging Face's apply_chat_template, with its
// tojson and loop controls).
struct Rendering {
  const char* source;
  const char* expected;
};

void ExpectRenderings(std::initializer_list<Rendering> cases) {
  for (const Rendering& c : cases) {
    absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(c.source);
    ASSERT_TRUE(parsed.ok()) << c.source << ": " << parsed.status();
    absl::StatusOr<std::string> text =
        parsed->Render(Variables(), absl::FromCivil(absl::CivilSecond(2024, 7, 26, 12, 0, 0), absl::LocalTimeZone()));
    ASSERT_TRUE(text.ok()) << c.source << ": " << text.status();
    EXPECT_EQ(*text, c.expected) << c.source;
  }
}

TEST(ChatTemplate, NamespaceAttributesCarryValuesOutOfLoops) {
  ExpectRenderings(
      {{"{% set ns = namespace(users=0, last='') %}{% for m in messages %}{% if m.role == 'user' %}"
        "{% set ns.users = ns.users + 1 %}{% set ns.last = m.content %}{% endif %}{% endfor %}"
        "{{ ns.users }}:{{ ns.last }}",
        "2:Bye"}});
}

TEST(ChatTemplate, ToJsonIsPythonsJsonDumpsInTheCallersKeyOrder) {
  ExpectRenderings(
      {{"{{ tool | tojson }}|{{ tool.parameters | tojson(indent=2) }}|{{ [] | tojson(indent=2) }}{{ {} | tojson }}|"
        "{{ [1, 'a\"b\\\\c\\n', none, true, 2.5] | tojson }}",
        "{\"name\": \"f\", \"description\": \"Wetter — heute\", \"parameters\": {\"type\": \"object\", \"properties\": "
        "{\"b\": {\"type\": \"integer\"}, \"a\": {\"type\": \"string\"}}, \"required\": []}}|{\n  \"type\": "
        "\"object\",\n"
        "  \"properties\": {\n    \"b\": {\n      \"type\": \"integer\"\n    },\n    \"a\": {\n      \"type\": "
        "\"string\"\n"
        "    }\n  },\n  \"required\": []\n}|[]{}|[1, \"a\\\"b\\\\c\\n\", null, true, 2.5]"}});
}

TEST(ChatTemplate, StringAndDictMethodsAsPython) {
  ExpectRenderings(
      {{"{{ ' x y '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '  l'.lstrip() }}|{{ 'r  '.rstrip() }}|"
        "{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'Hello'.startswith('He') }}"
        "{{ 'Hello'.endswith(('x', 'lo')) }}|{{ 'hI'.upper() }}{{ 'hI'.lower() }}|{{ 'hello wORLD'.title() }}|"
        "{{ 'aaa'.replace('a', 'b', 2) }}|{{ tool.get('name') }}{{ tool.get('zz', 'dflt') }}{{ tool.get('zz') }}|"
        "{{ tool.parameters.properties.keys() | list }}|"
        "{{ tool.parameters.properties.values() | map(attribute='type') | join(',') }}|"
        "{% for k, v in tool.parameters.properties.items() %}{{ k }}={{ v.type }};{% endfor %}",
        "x y|hi|l|r|['a', 'b', '', 'c']|['a', 'b']|['a', 'b c']|TrueTrue|HIhi|Hello World|bba|fdfltNone|['b', 'a']|"
        "integer,string|b=integer;a=string;"}});
}

TEST(ChatTemplate, FiltersAsJinja) {
  ExpectRenderings(
      {{"{{ missing | default('d') }}|{{ '' | default('e', true) }}|{{ messages | map(attribute='role') | join(',') }}|"
        "{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | list }}|"
        "{{ messages | rejectattr('role', 'in', ['user', 'system']) | list | length }}|{{ messages | first | string }}|"
        "{{ (messages | last).content }}|{{ '42' | int + 1 }}{{ 'x' | int }}{{ 3.9 | int }}|"
        "{{ messages | join('/', attribute='role') }}|{{ [3, 1, 2] | select('odd') | list }}|{{ 'abc' | list }}|"
        "{{ 'ab' | first }}{{ 'ab' | last }}|{{ '  t  ' | trim }}|{{ 'Größe' | length }}|{{ 'Größe'[1:3] }}"
        "{{ 'Größe'[-1] }}",
        "d|e|system,user,assistant,user|['Hi there', 'Bye']|1|{'role': 'system', 'content': ' sys '}|Bye|4303|"
        "system/user/assistant/user|[3, 1]|['a', 'b', 'c']|ab|t|5|röe"}});
}

TEST(ChatTemplate, TestsAsJinja) {
  ExpectRenderings(
      {{"{{ 'u' is in 'user' }}{{ 3 is in [1, 2] }}|{{ tool is mapping }}{{ 'x' is mapping }}|"
        "{{ tool is iterable }}{{ 3 is iterable }}|{{ none is none }}{{ missing is none }}|"
        "{{ 'a' is string }}{{ 1 is string }}|{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(2) }}|"
        "{{ 1 is not defined }}|{{ 'a' is eq 'a' }}",
        "TrueFalse|TrueFalse|TrueFalse|TrueFalse|TrueFalse|TrueFalse|False|True"}});
}

TEST(ChatTemplate, LoopFiltersLoopControlsAndNeighbours) {
  ExpectRenderings(
      {{"{% for m in messages if m.role != 'system' %}{{ loop.index }}/{{ loop.length }}"
        "{{ '<' ~ loop.previtem.role if loop.previtem is defined }}{% if m.role == 'assistant' %}{% continue %}"
        "{% endif %}{{ m.role[0] }}{% if loop.index == 3 %}{% break %}{% endif %};{% endfor %}",
        "1/3u;2/3<user3/3<assistantu"}});
}

TEST(ChatTemplate, StrftimeNowFormatsTheGivenTimeAndIsDefined) {
  ExpectRenderings(
      {{"{{ strftime_now('%d %b %Y') }}|{% if strftime_now is defined %}def{% endif %}", "26 Jul 2024|def"}});
}

TEST(ChatTemplate, SplitsBlockSetsLiteralsAndPythonPrinting) {
  ExpectRenderings(
      {{"{% set content = messages[2].content %}{% if '</think>' in content %}{{ content.split('</think>')[-1] }}"
        "{% endif %}|{% set x %}  captured {{ 1 + 1 }}{% endset %}[{{ x }}]|{{ {'a': 1, 'b': [2]} }}|"
        "{{ ['x', none, true] }}|{{ 'ab' * 2 }}|{{ 7 / 2 }}|{{ 1.5 + 1 }}|{{ -0.25 }}",
        "Hello!|[  captured 2]|{'a': 1, 'b': [2]}|['x', None, True]|abab|3.5|2.5|-0.25"}});
}

TEST(ChatTemplate, RuntimeErrorsNameTheLineAndTheConstruct) {
  struct Case {
    const char* source;
    const char* message;
  };
  for (const Case& c :
       {Case{"ok\n{{ messages.append(1) }}", "line 2: a list has no method 'append'"},
        Case{"{{ undefined_function(1) }}", "'undefined_function' is undefined"},
        Case{"{{ messages(1) }}", "'messages' is a list, not a function"},
        Case{"{{ raise_exception('Only user and assistant roles!') }}", "Only user and assistant roles!"},
        Case{"{{ 'a' + 1 }}", "cannot apply '+' to a string and an integer"},
        Case{"{% set n = 1 %}{% set n.x = 2 %}", "cannot set an attribute of 'n', an integer"},
        Case{"{{ 'x'.split('') }}", "empty separator"}}) {
    absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(c.source);
    ASSERT_TRUE(parsed.ok()) << c.source << ": " << parsed.status();
    absl::StatusOr<std::string> text = parsed->Render(Variables());
    ASSERT_FALSE(text.ok()) << c.source << " rendered " << *text;
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument) << c.source;
    EXPECT_THAT(text.status().message(), HasSubstr(c.message)) << c.source;
  }
  // Llama 3.1's tool branch runs: tools are rendered, not refused.
  const ChatFormat format = FormatOf("llama3.1");
  absl::StatusOr<ChatTemplate> llama31 = ChatTemplate::Parse(format.source);
  ASSERT_TRUE(llama31.ok()) << llama31.status();
  Json variables = Chat(true, true, format);
  variables["tools"] = Json::array({{{"type", "function"}, {"function", {{"name", "f"}}}}});
  absl::StatusOr<std::string> text = llama31->Render(variables);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text,
              HasSubstr("{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"f\"\n    }\n}"));
}

TEST(ChatTemplate, RefusesWhatItCannotParseNamingTheLine) {
  struct Case {
    const char* source;
    const char* message;
  };
  for (const Case& c :
       {Case{"{% macro f() %}{% endmacro %}", "statement '{% macro %}' is not supported"},
        Case{"x\n{{ messages | frobnicate }}", "line 2: no filter named 'frobnicate'"},
        Case{"{{ x is frobnicated }}", "no test named 'frobnicated'"},
        Case{"{% set a, b = 1, 2 %}", "tuple assignment"}, Case{"{% break %}", "outside a for loop"},
        Case{"{% if x %}never closed", "missing '{% endif %}'"}, Case{"{{ 1 + }}", "unexpected 'end of tag'"},
        Case{"{% endfor %}", "without its opening statement"},
        Case{"{{ f(a=1, 2) }}", "a positional argument after a keyword argument"},
        Case{"{{ 'a' ", "is never closed"}}) {
    absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(c.source);
    ASSERT_FALSE(parsed.ok()) << c.source;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(parsed.status().message(), HasSubstr(c.message)) << c.source;
  }
}

// A template that cannot be parsed stops the front door's start (ServedModel::Load), naming the file and
// the line, instead of failing every chat request later.
TEST(ChatTemplate, AnUnparsableTemplateIsRefusedWhenTheModelIsLoaded) {
  const strata::testing::ScratchDir dir = strata::testing::MakeTempDir("chat_template_load");
  for (const char* file : {"tokenizer.json", "config.json"}) {
    std::filesystem::copy_file(kData + "/models/llama3-tiny/" + file, dir.path() / file);
  }
  auto write_template = [&](const std::string& source) {
    std::ofstream(dir.path() / "tokenizer_config.json") << Json{{"chat_template", source}}.dump();
  };
  write_template("{{ bos_token }}\n{% for m in messages %}{{ m.content | shout }}{% endfor %}");
  absl::StatusOr<std::unique_ptr<ServedModel>> refused = ServedModel::Load(dir.path(), "tiny");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("tokenizer_config.json: the chat template cannot be parsed"));
  EXPECT_THAT(refused.status().message(), HasSubstr("line 2: no filter named 'shout'"));

  write_template("{{ bos_token }}{% for m in messages %}{{ m.content | upper }}{% endfor %}");
  absl::StatusOr<std::unique_ptr<ServedModel>> loaded = ServedModel::Load(dir.path(), "tiny");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
}

TEST(ChatTemplate, FallbackWhenTheDirectoryHasNoTemplate) {
  absl::StatusOr<ChatFormat> format = LoadChatFormat(kData + "/models/llama3-tiny", "<|begin_of_text|>", "<|end_of_text|>");
  ASSERT_TRUE(format.ok()) << format.status();
  EXPECT_TRUE(format->fallback);
  absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(format->source);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  absl::StatusOr<std::string> text = parsed->Render(Chat(false, true, *format));
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "<|begin_of_text|>user: Hello, how are you?\nassistant: I'm doing great. How can I help you today?\n"
            "user: I'd like to show off how chat templating works!\nassistant:");
}

}  // namespace
}  // namespace strata::frontdoor
