#include "scheduler/frontdoor/chat_template.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "common/status.h"
#include "common/strings.h"
#include "scheduler/frontdoor/jinja_eval.h"
#include "scheduler/frontdoor/jinja_parser.h"

namespace strata::frontdoor {

using Json = nlohmann::json;

struct ChatTemplate::Program {
  jinja::Body body;
};

ChatTemplate::ChatTemplate(std::unique_ptr<Program> program) : program_(std::move(program)) {}
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;
ChatTemplate::~ChatTemplate() = default;

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string_view source) {
  auto program = std::make_unique<Program>();
  STRATA_ASSIGN_OR_RETURN(program->body, jinja::Parse(source));
  return ChatTemplate(std::move(program));
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& variables) const {
  return Render(variables, absl::Now());
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& variables, absl::Time now) const {
  std::string out;
  STRATA_RETURN_IF_ERROR(jinja::Render(program_->body, variables, now, out));
  return out;
}

absl::StatusOr<ChatFormat> LoadChatFormat(const std::filesystem::path& dir, std::string bos_fallback,
                                          std::string eos_fallback) {
  ChatFormat format;
  format.bos_token = std::move(bos_fallback);
  format.eos_token = std::move(eos_fallback);
  const std::filesystem::path path = dir / "tokenizer_config.json";
  std::ifstream file(path);
  if (!file) {
    format.source = std::string(kFallbackChatTemplate);
    format.fallback = true;
    return format;
  }
  std::stringstream text;
  text << file.rdbuf();
  const Json config = Json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(StrCat(path.string(), ": not a JSON object"));
  }
  auto token_text = [&](const char* key, std::string& out) -> absl::Status {
    auto found = config.find(key);
    if (found == config.end() || found->is_null()) return absl::OkStatus();
    if (found->is_string()) {
      out = found->get<std::string>();
    } else if (found->is_object() && found->contains("content") && (*found)["content"].is_string()) {
      out = (*found)["content"].get<std::string>();
    } else {
      return absl::InvalidArgumentError(StrCat(path.string(), ": '", key, "' is neither a string nor {\"content\": ...}"));
    }
    return absl::OkStatus();
  };
  STRATA_RETURN_IF_ERROR(token_text("bos_token", format.bos_token));
  STRATA_RETURN_IF_ERROR(token_text("eos_token", format.eos_token));
  auto chat = config.find("chat_template");
  if (chat == config.end() || chat->is_null()) {
    format.source = std::string(kFallbackChatTemplate);
    format.fallback = true;
  } else if (chat->is_string()) {
    format.source = chat->get<std::string>();
  } else if (chat->is_array()) {
    for (const Json& entry : *chat) {
      if (entry.is_object() && entry.contains("name") && entry["name"] == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        format.source = entry["template"].get<std::string>();
      }
    }
    if (format.source.empty()) {
      return absl::InvalidArgumentError(StrCat(path.string(), ": 'chat_template' is a list without a \"default\" entry"));
    }
  } else {
    return absl::InvalidArgumentError(StrCat(path.string(), ": 'chat_template' is neither a string nor a list"));
  }
  return format;
}

}  // namespace strata::frontdoor
