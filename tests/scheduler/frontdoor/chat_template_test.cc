// The chat-template interpreter on the real templates of Llama 3, Qwen2 and Mistral
// (tests/data/chat_templates/), on Jinja's whitespace rules as Hugging Face sets them, and its refusals.
#include "scheduler/frontdoor/chat_template.h"

#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strata::frontdoor {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

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
  ASSERT_GE(golden["cases"].size(), 20u);
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
      if (name.find("mistral") != std::string::npos) {
        EXPECT_THAT(text.status().message(), HasSubstr(c["error"].get<std::string>())) << name;
      }
      continue;
    }
    ASSERT_TRUE(text.ok()) << name << ": " << text.status();
    EXPECT_EQ(*text, c["expected"].get<std::string>()) << name;
  }
}

TEST(ChatTemplate, UnsupportedCallsFailWhenEvaluatedNamingThem) {
  struct Case {
    const char* source;
    const char* message;
  };
  for (const Case& c : {Case{"ok\n{{ messages | tojson }}", "line 2: filter 'tojson' is not supported"},
                        Case{"{{ tools | tojson(indent=4) }}", "filter 'tojson(...)' is not supported"},
                        Case{"{{ m.content.strip() }}", "method call '.strip()'"},
                        Case{"{% set ns = namespace(x=1) %}", "function 'namespace()' is not supported"},
                        Case{"{{ x is divisibleby }}", "test 'is divisibleby' is not supported"}}) {
    absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(c.source);
    ASSERT_TRUE(parsed.ok()) << c.source << ": " << parsed.status();
    absl::StatusOr<std::string> text = parsed->Render(Json{{"messages", Json::array()}, {"m", {{"content", "x"}}}});
    ASSERT_FALSE(text.ok()) << c.source;
    EXPECT_EQ(text.status().code(), absl::StatusCode::kUnimplemented) << c.source;
    EXPECT_THAT(text.status().message(), HasSubstr(c.message)) << c.source;
  }
  // Llama 3.1's template uses them only for tools: with tools given, it fails instead of guessing.
  const ChatFormat format = FormatOf("llama3.1");
  absl::StatusOr<ChatTemplate> llama31 = ChatTemplate::Parse(format.source);
  ASSERT_TRUE(llama31.ok()) << llama31.status();
  Json variables = Chat(true, true, format);
  variables["tools"] = Json::array({{{"type", "function"}}});
  EXPECT_THAT(llama31->Render(variables).status().message(), HasSubstr("filter 'tojson(...)'"));
}

TEST(ChatTemplate, RefusesWhatItCannotParseNamingTheLine) {
  struct Case {
    const char* source;
    const char* message;
  };
  for (const Case& c : {Case{"{% macro f() %}{% endmacro %}", "statement '{% macro %}' is not supported"},
                        Case{"x\n{% set ns.a = 1 %}", "line 2: only '{% set name = value %}' is supported"},
                        Case{"{% if x %}never closed", "missing '{% endif %}'"},
                        Case{"{{ 1 + }}", "unexpected 'end of tag'"},
                        Case{"{% endfor %}", "without its opening statement"},
                        Case{"{{ 'a' ", "is never closed"}}) {
    absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(c.source);
    ASSERT_FALSE(parsed.ok()) << c.source;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(parsed.status().message(), HasSubstr(c.message)) << c.source;
  }
  absl::StatusOr<ChatTemplate> adds = ChatTemplate::Parse("{{ 'a' + 1 }}");
  ASSERT_TRUE(adds.ok());
  EXPECT_THAT(adds->Render(Json::object()).status().message(), HasSubstr("cannot apply '+' to a string and a number"));
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
