#include "model/added_tokens.h"

#include <algorithm>
#include <utility>

#include "unicode/uchar.h"
#include "model/utf8.h"

namespace strata::model {
namespace {

// Rust regex's Unicode \s.
bool IsWhitespace(char32_t c) { return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_WHITE_SPACE); }

// Rust regex's Unicode \w: Alphabetic, marks, decimal numbers, connector punctuation, Join_Control.
bool IsWordCharacter(char32_t c) {
  const UChar32 u = static_cast<UChar32>(c);
  if (u_hasBinaryProperty(u, UCHAR_ALPHABETIC) || u_hasBinaryProperty(u, UCHAR_JOIN_CONTROL)) return true;
  const int32_t mask = U_GET_GC_MASK(u);
  return (mask & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0;
}

// The character that ends `text` (valid UTF-8, non-empty) and its start offset.
char32_t LastCharacter(std::string_view text, size_t* start) {
  size_t pos = text.size() - 1;
  while (pos > 0 && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) --pos;
  *start = pos;
  size_t length = 0;
  return DecodeUtf8Character(text.substr(pos), &length);
}

// Offset at which the run of whitespace that ends `text` starts.
size_t TrailingWhitespaceStart(std::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    size_t start = 0;
    if (!IsWhitespace(LastCharacter(text.substr(0, end), &start))) break;
    end = start;
  }
  return end;
}

// Length of the run of whitespace that starts `text`.
size_t LeadingWhitespaceLength(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t length = 0;
    if (!IsWhitespace(DecodeUtf8Character(text.substr(pos), &length))) break;
    pos += length;
  }
  return pos;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (tokens_[i].content.empty()) continue;
    by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(i);
  }
  for (std::vector<size_t>& candidates : by_first_byte_) {
    std::stable_sort(candidates.begin(), candidates.end(),
                     [this](size_t a, size_t b) { return tokens_[a].content.size() > tokens_[b].content.size(); });
  }
}

void AddedTokenMatcher::Split(std::string_view text, std::vector<TextSegment>& segments) const {
  size_t segment_start = 0;  // end of the last token segment
  size_t pos = 0;            // where the search for the next match starts
  while (pos < text.size()) {
    const AddedToken* match = nullptr;
    for (size_t index : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
      if (text.substr(pos).starts_with(tokens_[index].content)) {
        match = &tokens_[index];
        break;
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    size_t start = pos;
    size_t stop = pos + match->content.size();
    pos = stop;  // the next search starts after the match, whether it is kept or not
    if (match->single_word) {
      size_t unused = 0;
      const bool word_before = start > 0 && IsWordCharacter(LastCharacter(text.substr(0, start), &unused));
      const bool word_after = stop < text.size() && IsWordCharacter(DecodeUtf8Character(text.substr(stop), &unused));
      if (word_before || word_after) continue;
    }
    // Whitespace that an earlier token already took stays with it.
    if (match->lstrip) start = std::max(TrailingWhitespaceStart(text.substr(0, start)), segment_start);
    if (match->rstrip) stop += LeadingWhitespaceLength(text.substr(stop));
    if (start > segment_start) segments.push_back({text.substr(segment_start, start - segment_start), -1});
    segments.push_back({text.substr(start, stop - start), match->id});
    segment_start = stop;
    pos = std::max(pos, stop);
  }
  if (segment_start < text.size()) segments.push_back({text.substr(segment_start), -1});
}

}  // namespace strata::model
