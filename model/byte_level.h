// GPT-2's byte-level alphabet: a reversible map from the 256 byte values to 256 printable Unicode
// characters (`bytes_to_unicode()` in GPT-2's encoder.py), in which byte-level BPE vocabularies and
// merges are written. Strata converts vocab and merges to raw bytes once at load and runs BPE on bytes.
#ifndef STRATA_MODEL_BYTE_LEVEL_H_
#define STRATA_MODEL_BYTE_LEVEL_H_

#include <optional>
#include <string>
#include <string_view>

namespace strata::model {

// The split that the ByteLevel pre-tokenizer applies when `use_regex` is true.
inline constexpr std::string_view kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// The raw bytes that `token` (written in the byte-level alphabet) stands for, or nullopt when `token`
// is not valid UTF-8 or some character of it is outside the alphabet.
std::optional<std::string> ByteLevelToBytes(std::string_view token);

}  // namespace strata::model

#endif  // STRATA_MODEL_BYTE_LEVEL_H_
