#include "scheduler/frontdoor/text_stream.h"

#include <algorithm>
#include <utility>

namespace strata::frontdoor {
namespace {

bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

}  // namespace

TextStream::TextStream(const model::Tokenizer& tokenizer, std::vector<std::string> stops)
    : decoder_(tokenizer, model::SpecialTokens::kSkip) {
  for (std::string& stop : stops) {
    if (stop.empty()) continue;
    hold_bytes_ = std::max(hold_bytes_, stop.size() - 1);
    stops_.push_back(std::move(stop));
  }
}

std::string TextStream::Push(int32_t id) {
  if (stopped_) return "";
  pending_ += decoder_.Push(id);
  return Release(/*final=*/false);
}

std::string TextStream::Finish() {
  if (stopped_) return "";
  pending_ += decoder_.Finish();
  return Release(/*final=*/true);
}

std::string TextStream::Release(bool final) {
  // The earliest stop string in what is pending. Everything before pending_ was checked already with
  // the hold-back, so a stop cannot begin before it.
  size_t cut = std::string::npos;
  for (const std::string& stop : stops_) cut = std::min(cut, pending_.find(stop));
  std::string out;
  if (cut != std::string::npos) {
    stopped_ = true;
    out = pending_.substr(0, cut);
    pending_.clear();
    return out;
  }
  size_t release = final ? pending_.size() : pending_.size() - std::min(pending_.size(), hold_bytes_);
  // Never cut inside a UTF-8 character.
  while (release > 0 && release < pending_.size() && IsContinuationByte(pending_[release])) --release;
  out = pending_.substr(0, release);
  pending_.erase(0, release);
  return out;
}

}  // namespace strata::frontdoor
