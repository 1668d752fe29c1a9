#include "common/size_flags.h"

#include <string>

#include "absl/strings/str_format.h"
#include "common/byte_size.h"

namespace strata {

CLI::Validator ByteSizeFlag() {
  return CLI::Validator(
      [](std::string& input) -> std::string {
        absl::StatusOr<uint64_t> bytes = ParseByteSize(input);
        if (!bytes.ok()) return std::string(bytes.status().message());
        input = std::to_string(*bytes);
        return "";
      },
      "SIZE", "byte size");
}

CLI::Validator ByteRateFlag() {
  return CLI::Validator(
      [](std::string& input) -> std::string {
        absl::StatusOr<double> rate = ParseByteRate(input);
        if (!rate.ok()) return std::string(rate.status().message());
        input = absl::StrFormat("%.17g", *rate);
        return "";
      },
      "RATE", "byte rate");
}

}  // namespace strata
