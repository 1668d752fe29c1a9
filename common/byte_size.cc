#include "common/byte_size.h"

#include <cmath>
#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "common/strings.h"

namespace strata {
namespace {

struct Unit {
  std::string_view name;  // lower case
  double bytes;
};

constexpr double kKiB = 1024.0, kMiB = kKiB * 1024, kGiB = kMiB * 1024, kTiB = kGiB * 1024, kPiB = kTiB * 1024;
// clang-format off
constexpr Unit kUnits[] = {
    {"", 1},    {"b", 1},
    {"k", 1e3}, {"kb", 1e3}, {"ki", kKiB}, {"kib", kKiB},
    {"m", 1e6}, {"mb", 1e6}, {"mi", kMiB}, {"mib", kMiB},
    {"g", 1e9}, {"gb", 1e9}, {"gi", kGiB}, {"gib", kGiB},
    {"t", 1e12}, {"tb", 1e12}, {"ti", kTiB}, {"tib", kTiB},
    {"p", 1e15}, {"pb", 1e15}, {"pi", kPiB}, {"pib", kPiB},
};
// clang-format on

absl::StatusOr<double> ParseQuantity(std::string_view text, std::string_view what) {
  const std::string trimmed(absl::StripAsciiWhitespace(absl::string_view(text.data(), text.size())));
  auto invalid = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        StrCat("'", text, "' is not ", what, " (", why,
               "; e.g. 4096, 512MiB, 40GiB, 1.5TB: KiB/MiB/GiB/TiB are powers of 1024, kB/MB/GB/TB of 1000)"));
  };
  if (trimmed.empty()) return invalid("empty");
  // The number runs to the first space or letter other than an exponent's 'e' (`2e9`, not `20EiB`); it
  // starts with a digit or a point (strtod alone would also take "-1", "inf" and "0x10").
  size_t end = 0;
  while (end < trimmed.size()) {
    const unsigned char c = static_cast<unsigned char>(trimmed[end]);
    const bool exponent = (c == 'e' || c == 'E') && end + 1 < trimmed.size() &&
                          (absl::ascii_isdigit(static_cast<unsigned char>(trimmed[end + 1])) ||
                           trimmed[end + 1] == '+' || trimmed[end + 1] == '-');
    if (absl::ascii_isspace(c) || (absl::ascii_isalpha(c) && !exponent)) break;
    ++end;
  }
  if (end == 0 || !(absl::ascii_isdigit(static_cast<unsigned char>(trimmed[0])) || trimmed[0] == '.')) {
    return invalid("not a non-negative number first");
  }
  const std::string number = trimmed.substr(0, end);
  char* parsed_end = nullptr;
  const double value = std::strtod(number.c_str(), &parsed_end);
  if (parsed_end != number.c_str() + number.size() || !std::isfinite(value)) return invalid("not a number");
  const std::string unit = absl::AsciiStrToLower(absl::StripLeadingAsciiWhitespace(trimmed.substr(end)));
  for (const Unit& known : kUnits) {
    if (unit == known.name) return value * known.bytes;
  }
  return invalid(StrCat("unknown unit '", unit, "'"));
}

}  // namespace

absl::StatusOr<uint64_t> ParseByteSize(std::string_view text) {
  absl::StatusOr<double> bytes = ParseQuantity(text, "a byte size");
  if (!bytes.ok()) return bytes.status();
  // 2^64 is exactly representable; anything at or past it does not fit.
  if (*bytes >= 18446744073709551616.0) {
    return absl::InvalidArgumentError(StrCat("'", text, "' is more bytes than 2^64 - 1"));
  }
  return static_cast<uint64_t>(std::floor(*bytes));
}

absl::StatusOr<double> ParseByteRate(std::string_view text) { return ParseQuantity(text, "a byte rate"); }

std::string FormatBytes(uint64_t bytes) {
  constexpr std::string_view kNames[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < std::size(kNames)) {
    value /= 1024.0;
    ++unit;
  }
  if (unit == 0) return StrCat(bytes, " B");
  std::string out = absl::StrFormat("%.2f", value);
  while (out.back() == '0') out.pop_back();
  if (out.back() == '.') out.pop_back();
  return StrCat(out, " ", kNames[unit]);
}

}  // namespace strata
