// UTF-8 scanning for the tokenizer: validation of input text, lossy decoding of token bytes, and the
// boundary of a character that is still incomplete at the end of a stream.
//
// Well-formedness follows Unicode 15 table 3-7 (no overlongs, no surrogates, nothing above U+10FFFF).
// Lossy decoding replaces each maximal ill-formed subpart with one U+FFFD, which is what Rust's
// String::from_utf8_lossy (and so Hugging Face `tokenizers`) does.
#ifndef STRATA_MODEL_UTF8_H_
#define STRATA_MODEL_UTF8_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace strata::model {

inline constexpr std::string_view kUtf8ReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD

// The sequence that starts at text[0] (text non-empty):
//   kComplete:   a whole character of `length` bytes.
//   kTruncated:  all of `text` (length == text.size()) is a proper prefix of some character.
//   kIllFormed:  the first `length` bytes (>= 1) are a maximal ill-formed subpart.
struct Utf8Sequence {
  enum class Kind { kComplete, kTruncated, kIllFormed };
  Kind kind;
  size_t length;
};
Utf8Sequence ScanUtf8Sequence(std::string_view text);

// Byte offset of the first byte that does not start a complete, well-formed character, or
// std::string_view::npos when all of `text` is valid UTF-8.
size_t FindInvalidUtf8(std::string_view text);

// Appends `bytes` to `out`, with every maximal ill-formed subpart (including a truncated character at
// the end) replaced by U+FFFD.
void AppendUtf8Lossy(std::string_view bytes, std::string& out);

// Number of trailing bytes of `bytes` (0 to 3) that form a truncated but so far well-formed character:
// bytes that a later chunk could still complete.
size_t TruncatedUtf8TailLength(std::string_view bytes);

// Decodes the character at the start of `text`, which must begin with a complete one. Sets `*length`
// to its size in bytes.
char32_t DecodeUtf8Character(std::string_view text, size_t* length);

// Appends the UTF-8 encoding of `c` (a Unicode scalar value) to `out`.
void AppendUtf8Character(char32_t c, std::string& out);

}  // namespace strata::model

#endif  // STRATA_MODEL_UTF8_H_
