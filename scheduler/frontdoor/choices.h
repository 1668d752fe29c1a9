// ChoiceStreams: the n choices (OpenAI's `n`) of one request, read together. Each choice is a sequence of
// its own on one worker (its own GenerationStream); a response interleaves their pieces as they come.
#ifndef STRATA_SCHEDULER_FRONTDOOR_CHOICES_H_
#define STRATA_SCHEDULER_FRONTDOOR_CHOICES_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "scheduler/frontdoor/logprobs.h"
#include "scheduler/frontdoor/worker_proxy.h"

namespace strata::frontdoor {

// One reader (Next), except Cancel, which any thread may call. With more than one choice, each stream is
// read on a thread of its own, so that a choice whose worker is slow never holds back the others.
class ChoiceStreams {
 public:
  // `streams[i]` is choice i. `prompt_ids`: the request's prompt (echo); `prompt_logprobs`: its logprobs,
  // when asked for (the first token's without a value).
  ChoiceStreams(std::vector<std::unique_ptr<GenerationStream>> streams, std::vector<int32_t> prompt_ids,
                std::vector<TokenLogprobs> prompt_logprobs);
  ~ChoiceStreams();  // cancels the calls still running and joins their readers

  struct Event {
    uint32_t index = 0;
    absl::StatusOr<Piece> piece;
  };
  // The next piece of any choice, in the order they came; nullopt once every choice has finished or
  // failed (a failed one gives its error once).
  std::optional<Event> Next();
  // Cancels every choice's worker call (the client went away, or one choice failed).
  void Cancel();

  size_t size() const { return streams_.size(); }
  const GenerationStream& stream(size_t index) const { return *streams_[index]; }
  const std::vector<int32_t>& prompt_ids() const { return prompt_ids_; }
  const std::vector<TokenLogprobs>& prompt_logprobs() const { return prompt_logprobs_; }

 private:
  void Read(uint32_t index);  // a reader thread: choice `index` into events_

  std::vector<std::unique_ptr<GenerationStream>> streams_;
  std::vector<int32_t> prompt_ids_;
  std::vector<TokenLogprobs> prompt_logprobs_;
  size_t open_ = 0;  // choices that have not ended (Next's thread)
  absl::Mutex mutex_;
  std::deque<Event> events_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::thread> readers_;
};

}  // namespace strata::frontdoor

#endif  // STRATA_SCHEDULER_FRONTDOOR_CHOICES_H_
