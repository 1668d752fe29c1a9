#include "scheduler/frontdoor/choices.h"

#include <utility>

namespace strata::frontdoor {

ChoiceStreams::ChoiceStreams(std::vector<std::unique_ptr<GenerationStream>> streams, std::vector<int32_t> prompt_ids,
                             std::vector<TokenLogprobs> prompt_logprobs)
    : streams_(std::move(streams)),
      prompt_ids_(std::move(prompt_ids)),
      prompt_logprobs_(std::move(prompt_logprobs)),
      open_(streams_.size()) {
  if (streams_.size() <= 1) return;  // one choice is read on the caller's thread
  readers_.reserve(streams_.size());
  for (uint32_t i = 0; i < streams_.size(); ++i) readers_.emplace_back([this, i] { Read(i); });
}

ChoiceStreams::~ChoiceStreams() {
  Cancel();
  for (std::thread& reader : readers_) reader.join();
}

void ChoiceStreams::Cancel() {
  for (const std::unique_ptr<GenerationStream>& stream : streams_) stream->Cancel();
}

void ChoiceStreams::Read(uint32_t index) {
  while (true) {
    absl::StatusOr<Piece> piece = streams_[index]->Next();
    const bool last = !piece.ok() || piece->finished;
    {
      absl::MutexLock lock(&mutex_);
      events_.push_back({index, std::move(piece)});
    }
    if (last) return;
  }
}

std::optional<ChoiceStreams::Event> ChoiceStreams::Next() {
  if (open_ == 0) return std::nullopt;
  Event event;
  if (readers_.empty()) {
    event = {0, streams_[0]->Next()};
  } else {
    absl::MutexLock lock(&mutex_);
    mutex_.Await(absl::Condition(
        +[](std::deque<Event>* events) { return !events->empty(); }, &events_));
    event = std::move(events_.front());
    events_.pop_front();
  }
  if (!event.piece.ok() || event.piece->finished) --open_;
  return event;
}

}  // namespace strata::frontdoor
