// TextStream: the text of a token stream as it arrives, for streaming responses. Incremental
// detokenization (a character split over tokens is held back until it completes) and string stops (the
// text is cut where a stop string begins; the stop string is not part of the output). Text that could
// still be the beginning of a stop string is held back, so what was streamed never has to be taken back.
#ifndef STRATA_SCHEDULER_FRONTDOOR_TEXT_STREAM_H_
#define STRATA_SCHEDULER_FRONTDOOR_TEXT_STREAM_H_

#include <cstdint>
#include <string>
#include <vector>

#include "model/tokenizer.h"

namespace strata::frontdoor {

// Not thread-safe: one per response. REQUIRES: `tokenizer` outlives it.
class TextStream {
 public:
  // `stops`: stop strings (empty ones are ignored). Special tokens are left out of the text, as
  // OpenAI-compatible servers do (skip_special_tokens).
  TextStream(const model::Tokenizer& tokenizer, std::vector<std::string> stops);

  // Adds a token; returns the text that may be sent now (possibly ""). After a stop string was found,
  // stopped() is true and further tokens are ignored.
  std::string Push(int32_t id);
  // The held-back text (end of the stream).
  std::string Finish();

  bool stopped() const { return stopped_; }

 private:
  // Moves what can no longer start a stop string from pending_ to the returned text.
  std::string Release(bool final);

  model::StreamingDecoder decoder_;
  std::vector<std::string> stops_;
  size_t hold_bytes_ = 0;  // longest stop - 1
  std::string pending_;    // decoded, not yet sent
  bool stopped_ = false;
};

}  // namespace strata::frontdoor

#endif  // STRATA_SCHEDULER_FRONTDOOR_TEXT_STREAM_H_
