#include "model/byte_level.h"

#include <array>
#include <cstdint>

#include "model/utf8.h"

namespace strata::model {
namespace {

// Every code point of the alphabet is below this bound (the largest is U+0143).
constexpr char32_t kAlphabetEnd = 0x144;

// Bytes that are printable in Latin-1 stand for themselves; the other 68 bytes, in increasing order,
// stand for U+0100, U+0101, ...
constexpr bool IsPrintableLatin1(int byte) {
  return (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE && byte <= 0xFF);
}

constexpr std::array<char32_t, 256> kByteToCharacter = [] {
  std::array<char32_t, 256> table{};
  char32_t next_unprintable = 0x100;
  for (int byte = 0; byte < 256; ++byte) {
    table[byte] = IsPrintableLatin1(byte) ? static_cast<char32_t>(byte) : next_unprintable++;
  }
  return table;
}();

constexpr std::array<int16_t, kAlphabetEnd> kCharacterToByte = [] {
  std::array<int16_t, kAlphabetEnd> table{};
  for (auto& entry : table) entry = -1;
  for (int byte = 0; byte < 256; ++byte) table[kByteToCharacter[byte]] = static_cast<int16_t>(byte);
  return table;
}();

}  // namespace

std::optional<std::string> ByteLevelToBytes(std::string_view token) {
  std::string bytes;
  bytes.reserve(token.size());
  size_t pos = 0;
  while (pos < token.size()) {
    if (ScanUtf8Sequence(token.substr(pos)).kind != Utf8Sequence::Kind::kComplete) return std::nullopt;
    size_t length = 0;
    const char32_t c = DecodeUtf8Character(token.substr(pos), &length);
    if (c >= kAlphabetEnd || kCharacterToByte[c] < 0) return std::nullopt;
    bytes.push_back(static_cast<char>(kCharacterToByte[c]));
    pos += length;
  }
  return bytes;
}

}  // namespace strata::model
