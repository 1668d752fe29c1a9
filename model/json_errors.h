// Pieces of one-line error messages about JSON files (config.json, tokenizer.json, safetensors
// headers, shard indexes). Private to model/.
#ifndef STRATA_MODEL_JSON_ERRORS_H_
#define STRATA_MODEL_JSON_ERRORS_H_

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace strata::model {

// `text` in single quotes with control and non-ASCII bytes escaped: a name read from a file can hold
// anything.
inline std::string Quoted(absl::string_view text) { return absl::StrCat("'", absl::CEscape(text), "'"); }

// `message` with its control characters escaped (\n, \t, \xNN), so that text quoted from a file can
// never break a one-line error. Other bytes, UTF-8 included, are kept.
inline std::string OneLine(absl::string_view message) {
  std::string out;
  out.reserve(message.size());
  for (const char c : message) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x20 && byte != 0x7f) {
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0xf]);
    }
  }
  return out;
}

// nlohmann's error, safe for a one-line message: it quotes the input it last read, which in a corrupt
// file may be long or not UTF-8.
inline std::string DescribeJsonError(const nlohmann::json::exception& e) {
  constexpr size_t kMaxChars = 300;
  return absl::CEscape(absl::string_view(e.what()).substr(0, kMaxChars));
}

}  // namespace strata::model

#endif  // STRATA_MODEL_JSON_ERRORS_H_
