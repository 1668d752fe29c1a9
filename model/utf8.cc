#include "model/utf8.h"

#include <cstdint>

#include "common/status.h"

namespace strata::model {

Utf8Sequence ScanUtf8Sequence(std::string_view text) {
  STRATA_CHECK(!text.empty());
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t lead = byte(0);
  if (lead < 0x80) return {Utf8Sequence::Kind::kComplete, 1};
  size_t need = 0;
  uint8_t lo = 0x80;  // range of the byte after the lead; later bytes are always 80..BF
  uint8_t hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    if (lead == 0xE0) lo = 0xA0;  // no overlongs
    if (lead == 0xED) hi = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
    if (lead == 0xF0) lo = 0x90;  // no overlongs
    if (lead == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {Utf8Sequence::Kind::kIllFormed, 1};
  }
  for (size_t i = 1; i < need; ++i) {
    if (i >= text.size()) return {Utf8Sequence::Kind::kTruncated, text.size()};
    const uint8_t min = i == 1 ? lo : 0x80;
    const uint8_t max = i == 1 ? hi : 0xBF;
    if (byte(i) < min || byte(i) > max) return {Utf8Sequence::Kind::kIllFormed, i};
  }
  return {Utf8Sequence::Kind::kComplete, need};
}

size_t FindInvalidUtf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    // ASCII fast path.
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const Utf8Sequence seq = ScanUtf8Sequence(text.substr(pos));
    if (seq.kind != Utf8Sequence::Kind::kComplete) return pos;
    pos += seq.length;
  }
  return std::string_view::npos;
}

void AppendUtf8Lossy(std::string_view bytes, std::string& out) {
  out.reserve(out.size() + bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    const Utf8Sequence seq = ScanUtf8Sequence(bytes.substr(pos));
    if (seq.kind == Utf8Sequence::Kind::kComplete) {
      out.append(bytes.data() + pos, seq.length);
    } else {
      out.append(kUtf8ReplacementCharacter);
    }
    pos += seq.length;
  }
}

size_t TruncatedUtf8TailLength(std::string_view bytes) {
  // A truncated character is at most 3 bytes long, so its lead byte is among the last 3.
  const size_t first = bytes.size() > 3 ? bytes.size() - 3 : 0;
  for (size_t start = first; start < bytes.size(); ++start) {
    const uint8_t b = static_cast<uint8_t>(bytes[start]);
    if (b >= 0x80 && b < 0xC0) continue;  // continuation byte: not a lead
    const Utf8Sequence seq = ScanUtf8Sequence(bytes.substr(start));
    if (seq.kind == Utf8Sequence::Kind::kTruncated) return bytes.size() - start;
  }
  return 0;
}

char32_t DecodeUtf8Character(std::string_view text, size_t* length) {
  const Utf8Sequence seq = ScanUtf8Sequence(text);
  STRATA_CHECK(seq.kind == Utf8Sequence::Kind::kComplete);
  *length = seq.length;
  const auto byte = [&](size_t i) { return static_cast<char32_t>(static_cast<uint8_t>(text[i])); };
  switch (seq.length) {
    case 1:
      return byte(0);
    case 2:
      return ((byte(0) & 0x1F) << 6) | (byte(1) & 0x3F);
    case 3:
      return ((byte(0) & 0x0F) << 12) | ((byte(1) & 0x3F) << 6) | (byte(2) & 0x3F);
    default:
      return ((byte(0) & 0x07) << 18) | ((byte(1) & 0x3F) << 12) | ((byte(2) & 0x3F) << 6) | (byte(3) & 0x3F);
  }
}

void AppendUtf8Character(char32_t c, std::string& out) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

}  // namespace strata::model
