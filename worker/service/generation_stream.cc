#include "worker/service/generation_stream.h"

namespace strata::worker {

GenerationStream::Update GenerationStream::Next(absl::Duration timeout) {
  absl::MutexLock lock(&mutex_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return done_ || !tokens_.empty(); };
  mutex_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  Update update;
  update.tokens.swap(tokens_);
  update.logprobs.swap(logprobs_);
  update.prompt_logprobs.swap(prompt_logprobs_);
  update.done = done_;
  if (done_) {
    update.status = status_;
    update.summary = summary_;
  }
  return update;
}

void GenerationStream::Push(int32_t token, std::optional<engine::PositionLogprobs> logprobs) {
  absl::MutexLock lock(&mutex_);
  tokens_.push_back(token);
  if (logprobs) logprobs_.push_back(*std::move(logprobs));
}

void GenerationStream::PushPromptLogprobs(std::vector<engine::PositionLogprobs> logprobs) {
  absl::MutexLock lock(&mutex_);
  prompt_logprobs_ = std::move(logprobs);
}

void GenerationStream::Finish(const GenerationSummary& summary) {
  absl::MutexLock lock(&mutex_);
  summary_ = summary;
  done_ = true;
}

void GenerationStream::Fail(const absl::Status& status) {
  absl::MutexLock lock(&mutex_);
  status_ = status;
  done_ = true;
}

}  // namespace strata::worker
