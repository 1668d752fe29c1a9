// The model the front door serves: its name, tokenizer, chat template and context length, read from a
// Hugging Face model directory (no weights needed), and the step that turns an OpenAI request into token
// ids with resolved limits.
#ifndef STRATA_SCHEDULER_FRONTDOOR_SERVED_MODEL_H_
#define STRATA_SCHEDULER_FRONTDOOR_SERVED_MODEL_H_

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "scheduler/frontdoor/chat_template.h"
#include "scheduler/frontdoor/limits.h"
#include "scheduler/frontdoor/request.h"
#include "scheduler/frontdoor/worker_proxy.h"
#include "model/tokenizer.h"

namespace strata::frontdoor {

// Immutable after Load; thread-safe.
class ServedModel {
 public:
  // Reads `dir`/tokenizer.json, `dir`/config.json (max_position_embeddings, BOS/EOS ids) and
  // `dir`/tokenizer_config.json when present (chat template; without one, kFallbackChatTemplate).
  // `name` empty: the directory's base name. Errors name the file; a chat template that cannot be parsed
  // (a syntax error, a statement, filter or test the interpreter lacks) is one, naming the line.
  static absl::StatusOr<std::unique_ptr<ServedModel>> Load(const std::filesystem::path& dir, std::string name);

  const std::string& name() const { return name_; }
  int64_t context_tokens() const { return context_tokens_; }
  const model::Tokenizer& tokenizer() const { return *tokenizer_; }
  const ChatFormat& chat_format() const { return chat_format_; }

  // Checks the model name (NotFound, code model_not_found), tokenizes or renders the prompt, checks the
  // ids against the vocabulary and prompt + max_tokens against the context (InvalidArgument, code
  // context_length_exceeded), and fills the defaults (max_tokens 16 for completions, the rest of the
  // context for chat; a random seed when none is given). `limits`: a prompt over max_prompt_tokens
  // (counted after tokenization and the chat template) or a max_tokens over max_completion_tokens is
  // InvalidArgument naming the count and the limit; an absent max_tokens is capped by
  // max_completion_tokens as well as by the context.
  absl::StatusOr<PreparedRequest> Prepare(const GenerationRequest& request, const RequestLimits& limits = {}) const;

  // NotFound (code model_not_found) unless `model` is this model's name.
  absl::Status CheckName(const std::string& model) const;
  // The prompt's token ids, as Prepare makes them (its first checks: the model name, the tokens in the
  // vocabulary), without the limits; /tokenize answers with them.
  absl::StatusOr<std::vector<int32_t>> Tokenize(const GenerationRequest& request) const;

  // The chat prompt's text (exposed for tests).
  absl::StatusOr<std::string> RenderChat(const GenerationRequest& request) const;

 private:
  ServedModel() = default;

  std::string name_;
  int64_t context_tokens_ = 0;
  std::optional<model::Tokenizer> tokenizer_;
  ChatFormat chat_format_;
  std::optional<ChatTemplate> chat_template_;  // set by Load
};

}  // namespace strata::frontdoor

#endif  // STRATA_SCHEDULER_FRONTDOOR_SERVED_MODEL_H_
