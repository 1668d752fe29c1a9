// Strata's chat-template interpreter against Hugging Face's JavaScript Jinja (@huggingface/jinja, pinned in
// deploy/node): the templates of Llama 3.1 and 3.2, Qwen2.5, Mistral v0.3 and a DeepSeek-R1 distill
// (tests/data/chat_templates/) over the conversations of conversations.json (with and without a system
// prompt, multi-turn, tools, tool calls and results, add_generation_prompt false and true). jinja_js/render.mjs
// renders every case with the package; each must come out of ChatTemplate byte for byte, and a case the
// package refuses (raise_exception) must fail here with the same message. Skips, saying why, without node
// or the package (deploy/install-deps.sh installs both).
#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scheduler/frontdoor/chat_template.h"
#include "tests/testing/child_process.h"

namespace strata::frontdoor {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::ordered_json;
using strata::testing::ChildProcess;

const std::filesystem::path kTemplates = std::filesystem::path(STRATA_TEST_DATA_DIR) / "chat_templates";
const std::filesystem::path kSource = STRATA_SOURCE_DIR;

std::optional<std::string> FindNode() {
  for (const char* candidate : {"/usr/bin/node", "/usr/local/bin/node"}) {
    if (std::filesystem::exists(candidate)) return candidate;
  }
  return std::nullopt;
}

TEST(JinjaDifferential, RendersEveryCaseByteForByteAsHuggingFaceJinja) {
  const std::optional<std::string> node = FindNode();
  if (!node) GTEST_SKIP() << "node is not installed (deploy/install-deps.sh needs node 20 + npm)";
  const std::filesystem::path package = kSource / "deploy/node/node_modules/@huggingface/jinja/package.json";
  if (!std::filesystem::exists(package)) {
    GTEST_SKIP() << package.string() << " is missing: run deploy/install-deps.sh (npm ci in deploy/node)";
  }
  ChildProcess renderer(
      {*node, (kSource / "tests/scheduler/frontdoor/jinja_js/render.mjs").string(), kTemplates.string()});
  const std::optional<int> code = renderer.Wait(std::chrono::seconds(30));
  ASSERT_TRUE(code.has_value()) << "render.mjs did not finish: " << renderer.err();
  ASSERT_EQ(*code, 0) << renderer.err();
  const Json cases = Json::parse(renderer.out(), nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(cases.is_array()) << "render.mjs printed no JSON array: " << renderer.out().substr(0, 200);

  std::map<std::string, ChatTemplate> templates;
  std::map<std::string, int> rendered_per_template;
  int with_tools = 0, refused = 0;
  for (const Json& c : cases) {
    const std::string name = c["template"];
    const std::string label = name + " / " + c["conversation"].get<std::string>() +
                              " / add_generation_prompt=" + c["variables"]["add_generation_prompt"].dump();
    if (!templates.contains(name)) {
      absl::StatusOr<ChatFormat> format = LoadChatFormat(kTemplates / name, "", "");
      ASSERT_TRUE(format.ok()) << name << ": " << format.status();
      absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(format->source);
      ASSERT_TRUE(parsed.ok()) << name << ": " << parsed.status();
      templates.emplace(name, *std::move(parsed));
    }
    absl::StatusOr<std::string> text = templates.at(name).Render(c["variables"]);
    ++rendered_per_template[name];
    if (c["variables"].contains("tools")) ++with_tools;
    if (c.contains("error")) {
      ++refused;
      ASSERT_FALSE(text.ok()) << label << ": rendered where @huggingface/jinja raised '"
                              << c["error"].get<std::string>() << "':\n"
                              << *text;
      EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument) << label;
      EXPECT_THAT(text.status().message(), HasSubstr(c["error"].get<std::string>())) << label;
      continue;
    }
    ASSERT_TRUE(text.ok()) << label << ": " << text.status();
    EXPECT_EQ(*text, c["output"].get<std::string>()) << label;
  }
  // The cases must be there: five templates, tools among them, and refusals compared too.
  EXPECT_EQ(rendered_per_template.size(), 5u);
  for (const auto& [name, count] : rendered_per_template) EXPECT_GE(count, 10) << name;
  EXPECT_GE(with_tools, 20);
  EXPECT_GE(refused, 2);
}

}  // namespace
}  // namespace strata::frontdoor
