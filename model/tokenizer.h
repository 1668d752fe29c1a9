// Strata's tokenizer: byte-level BPE as Hugging Face `tokenizers` defines it in tokenizer.json (the format
// Llama 3 and Qwen2 ship), reproducing its ids exactly.
//
// Pipeline of Encode: added tokens are cut out of the raw text (leftmost-longest), the rest is
// normalized (NFC etc.), pre-tokenized (regex Split, ByteLevel), and each piece is BPE-encoded over raw
// bytes; with SpecialTokens::kInclude the post-processor template then adds tokens such as BOS.
//
// Supported in tokenizer.json (anything else is refused at load with InvalidArgumentError):
//   normalizer:     null, NFC, NFD, NFKC, NFKD, Sequence of those
//   pre_tokenizer:  Split (Regex or String pattern, behavior Isolated), ByteLevel, Sequence of those; a
//                   ByteLevel step is required
//   model:          BPE (merges as "a b" or ["a", "b"]; ignore_merges; unk_token and fuse_unk); not
//                   dropout, byte_fallback, continuing_subword_prefix, end_of_word_suffix
//   post_processor: null, TemplateProcessing (its `single` template), ByteLevel, Sequence of those
//   decoder:        ByteLevel, or a Sequence of ByteLevel
//   added_tokens:   content, id, special, lstrip, rstrip, single_word, normalized
#ifndef STRATA_MODEL_TOKENIZER_H_
#define STRATA_MODEL_TOKENIZER_H_

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace strata::model {

// Special tokens in Encode: kInclude runs the post-processor template (e.g. prepends
// <|begin_of_text|>); kSkip is `add_special_tokens=False` in Hugging Face `tokenizers`.
// In Decode: kInclude writes special tokens' text; kSkip leaves them out (`skip_special_tokens=True`).
enum class SpecialTokens { kInclude, kSkip };

// Movable, not copyable. Encode and Decode are const and thread-safe (the BPE cache inside is guarded by
// a mutex).
class Tokenizer {
 public:
  // Reads and parses a tokenizer.json. NotFoundError when the file cannot be read; InvalidArgumentError
  // with a one-line message naming the file and the problem for anything malformed or unsupported.
  static absl::StatusOr<Tokenizer> FromFile(const std::filesystem::path& tokenizer_json);
  // As FromFile, from the text of a tokenizer.json; `source_name` stands for the file in error messages.
  static absl::StatusOr<Tokenizer> FromJson(std::string_view json, std::string_view source_name);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // The ids of `text`, as Hugging Face `tokenizers` gives them. Added tokens (e.g. "<|end_of_text|>")
  // in the text map to their ids with either `special` mode. InvalidArgumentError when `text` is not
  // valid UTF-8.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              SpecialTokens special = SpecialTokens::kInclude) const;

  // The text of `ids`. Added tokens give their content; special ones are left out with
  // SpecialTokens::kSkip. Bytes that do not form valid UTF-8 become U+FFFD (one per maximal ill-formed
  // subsequence, as Hugging Face does). An id that names no token (negative, >= vocab_size(), or a hole
  // in the vocabulary) gives U+FFFD, where Hugging Face would drop it silently.
  std::string Decode(absl::Span<const int32_t> ids, SpecialTokens special = SpecialTokens::kInclude) const;

  // Number of ids: the largest id of the model vocabulary and the added tokens, plus one.
  int32_t vocab_size() const;

  // The id of `token`, written as in tokenizer.json (byte-level alphabet, e.g. "Ġthe"; added tokens as
  // their content). Added tokens take precedence over the model vocabulary.
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token of `id` as written in tokenizer.json; "" when `id` names no token.
  std::string_view IdToToken(int32_t id) const;

 private:
  friend class StreamingDecoder;
  struct Impl;

  explicit Tokenizer(std::unique_ptr<Impl> impl);
  // Appends the raw bytes of token `id` to `bytes` (see Decode).
  void AppendTokenBytes(int32_t id, SpecialTokens special, std::string& bytes) const;

  std::unique_ptr<Impl> impl_;
};

// Incremental Decode for streaming output. Bytes of a character split over several tokens are held back
// until the character completes, so no chunk ends inside a character; concatenating every Push() and
// the final Finish() equals tokenizer.Decode(all ids, special).
// REQUIRES: `tokenizer` outlives the decoder. Not thread-safe: one decoder per stream.
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tokenizer, SpecialTokens special = SpecialTokens::kInclude);

  // The text that `id` completes; may be "" while a character is incomplete.
  std::string Push(int32_t id);
  // The held-back bytes (a truncated character gives U+FFFD); the decoder is then empty again.
  std::string Finish();

 private:
  const Tokenizer* tokenizer_;
  SpecialTokens special_;
  std::string pending_bytes_;  // a truncated UTF-8 character, at most 3 bytes, between calls
};

}  // namespace strata::model

#endif  // STRATA_MODEL_TOKENIZER_H_
