#include "scheduler/frontdoor/served_model.h"

#include <random>
#include <utility>

#include "common/log.h"
#include "common/status.h"
#include "common/strings.h"
#include "model/config.h"

namespace strata::frontdoor {

absl::StatusOr<std::unique_ptr<ServedModel>> ServedModel::Load(const std::filesystem::path& dir, std::string name) {
  std::unique_ptr<ServedModel> served(new ServedModel());
  served->name_ = name.empty() ? std::filesystem::absolute(dir).lexically_normal().filename().string() : std::move(name);
  if (served->name_.empty()) served->name_ = std::filesystem::absolute(dir).lexically_normal().parent_path().filename().string();
  STRATA_ASSIGN_OR_RETURN(model::Tokenizer tokenizer, model::Tokenizer::FromFile(dir / "tokenizer.json"));
  served->tokenizer_.emplace(std::move(tokenizer));
  STRATA_ASSIGN_OR_RETURN(model::ModelConfig config, model::LoadModelConfig(dir / "config.json"));
  served->context_tokens_ = config.max_position_embeddings;
  if (served->context_tokens_ <= 0) {
    return absl::InvalidArgumentError(StrCat((dir / "config.json").string(), ": no max_position_embeddings"));
  }
  std::string bos, eos;
  if (config.bos_token_id >= 0) bos = std::string(served->tokenizer_->IdToToken(static_cast<int32_t>(config.bos_token_id)));
  if (!config.eos_token_ids.empty()) {
    eos = std::string(served->tokenizer_->IdToToken(static_cast<int32_t>(config.eos_token_ids[0])));
  }
  STRATA_ASSIGN_OR_RETURN(served->chat_format_, LoadChatFormat(dir, bos, eos));
  // A template this interpreter cannot parse stops the start, naming the file and the line, rather than
  // failing every chat request later.
  absl::StatusOr<ChatTemplate> parsed = ChatTemplate::Parse(served->chat_format_.source);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(StrCat((dir / "tokenizer_config.json").string(),
                                             ": the chat template cannot be parsed: ", parsed.status().message()));
  }
  served->chat_template_.emplace(*std::move(parsed));
  LogInfo(StrCat("event=frontdoor_model model=", served->name_, " dir=", dir.string(),
                 " context_tokens=", served->context_tokens_,
                 " chat_template=", served->chat_format_.fallback ? "fallback" : "tokenizer_config.json"));
  return served;
}

absl::StatusOr<std::string> ServedModel::RenderChat(const GenerationRequest& request) const {
  nlohmann::json messages = nlohmann::json::array();
  for (const ChatMessage& m : request.messages) messages.push_back({{"role", m.role}, {"content", m.content}});
  nlohmann::json variables = {{"messages", messages},
                              {"add_generation_prompt", request.add_generation_prompt},
                              {"bos_token", chat_format_.bos_token},
                              {"eos_token", chat_format_.eos_token}};
  absl::StatusOr<std::string> text = chat_template_->Render(variables);
  if (!text.ok()) return ApiError(absl::StatusCode::kInvalidArgument, std::string(text.status().message()), {}, "messages");
  return text;
}

absl::Status ServedModel::CheckName(const std::string& model) const {
  if (model == name_) return absl::OkStatus();
  return ApiError(absl::StatusCode::kNotFound,
                  StrCat("The model `", model, "` does not exist (this server serves `", name_, "`)."),
                  "model_not_found", "model");
}

absl::StatusOr<std::vector<int32_t>> ServedModel::Tokenize(const GenerationRequest& request) const {
  STRATA_RETURN_IF_ERROR(CheckName(request.model));
  const char* prompt_param = request.endpoint == Endpoint::kChat ? "messages" : "prompt";
  std::vector<int32_t> out;
  if (request.endpoint == Endpoint::kChat) {
    STRATA_ASSIGN_OR_RETURN(std::string text, RenderChat(request));
    // The template writes the special tokens it wants (BOS), as Hugging Face's apply_chat_template.
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(text, model::SpecialTokens::kSkip);
    if (!ids.ok()) return ApiError(absl::StatusCode::kInvalidArgument, std::string(ids.status().message()), {}, "messages");
    out = *std::move(ids);
  } else if (request.prompt_text) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(
        *request.prompt_text, request.add_special_tokens ? model::SpecialTokens::kInclude : model::SpecialTokens::kSkip);
    if (!ids.ok()) return ApiError(absl::StatusCode::kInvalidArgument, std::string(ids.status().message()), {}, "prompt");
    out = *std::move(ids);
  } else {
    out = request.prompt_ids;
  }
  if (out.empty()) return ApiError(absl::StatusCode::kInvalidArgument, "the prompt has no tokens", {}, prompt_param);
  const int32_t vocab = tokenizer_->vocab_size();
  for (int32_t id : out) {
    if (id < 0 || id >= vocab) {
      return ApiError(absl::StatusCode::kInvalidArgument,
                      StrCat("token id ", id, " is outside the vocabulary of `", name_, "` (", vocab, " ids)"), {},
                      prompt_param);
    }
  }
  return out;
}

absl::StatusOr<PreparedRequest> ServedModel::Prepare(const GenerationRequest& request,
                                                     const RequestLimits& limits) const {
  PreparedRequest out;
  out.model = name_;
  const char* prompt_param = request.endpoint == Endpoint::kChat ? "messages" : "prompt";
  STRATA_ASSIGN_OR_RETURN(out.prompt_ids, Tokenize(request));
  const int32_t vocab = tokenizer_->vocab_size();
  for (int32_t id : request.stop_token_ids) {
    if (id < 0 || id >= vocab) {
      return ApiError(absl::StatusCode::kInvalidArgument,
                      StrCat("token id ", id, " is outside the vocabulary of `", name_, "` (", vocab, " ids)"), {},
                      "stop_token_ids");
    }
  }
  const int64_t prompt_tokens = static_cast<int64_t>(out.prompt_ids.size());
  if (limits.max_prompt_tokens > 0 && prompt_tokens > limits.max_prompt_tokens) {
    return ApiError(absl::StatusCode::kInvalidArgument,
                    StrCat("Your ", prompt_param, " has ", prompt_tokens, " tokens; this server accepts at most ",
                           limits.max_prompt_tokens, " prompt tokens per request. Please reduce the length of the ",
                           prompt_param, "."),
                    "context_length_exceeded", prompt_param);
  }
  int64_t max_tokens = 0;
  if (request.max_tokens) {
    max_tokens = *request.max_tokens;
    if (limits.max_completion_tokens > 0 && max_tokens > limits.max_completion_tokens) {
      return ApiError(absl::StatusCode::kInvalidArgument,
                      StrCat("max_tokens is ", max_tokens, ", but this server generates at most ",
                             limits.max_completion_tokens, " completion tokens per request."),
                      {}, "max_tokens");
    }
  } else {
    max_tokens = request.endpoint == Endpoint::kChat ? context_tokens_ - prompt_tokens : 16;
    if (limits.max_completion_tokens > 0) max_tokens = std::min(max_tokens, limits.max_completion_tokens);
  }
  if (prompt_tokens + std::max<int64_t>(max_tokens, 1) > context_tokens_) {
    return ApiError(absl::StatusCode::kInvalidArgument,
                    StrCat("This model's maximum context length is ", context_tokens_, " tokens. However, you requested ",
                           prompt_tokens + max_tokens, " tokens (", prompt_tokens, " in the ",
                           request.endpoint == Endpoint::kChat ? "messages" : "prompt", ", ", max_tokens,
                           " for the completion). Please reduce the length of the ",
                           request.endpoint == Endpoint::kChat ? "messages" : "prompt", " or completion."),
                    "context_length_exceeded", prompt_param);
  }
  out.max_tokens = static_cast<uint32_t>(max_tokens);
  out.temperature = request.temperature;
  out.top_p = request.top_p;
  out.top_k = request.top_k;
  out.min_p = request.min_p;
  out.presence_penalty = request.presence_penalty;
  out.frequency_penalty = request.frequency_penalty;
  out.repetition_penalty = request.repetition_penalty;
  if (request.seed) {
    out.seed = *request.seed;
  } else {
    std::random_device random;
    out.seed = (static_cast<uint64_t>(random()) << 32) | random();
  }
  out.stop = request.stop;
  out.stop_token_ids = request.stop_token_ids;
  out.ignore_eos = request.ignore_eos;
  out.cache_salt = request.cache_salt;
  out.disable_prefix_cache = request.disable_prefix_cache;
  out.top_logprobs = request.top_logprobs;
  return out;
}

}  // namespace strata::frontdoor
