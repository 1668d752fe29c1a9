// Bounds on a JSON body's shape (nesting depth, element count), checked as its bytes arrive and before
// any of it is parsed. nlohmann's parser builds the whole tree and recurses once per level, so without
// them 16 MB of `[` costs ~1.4 GB of memory and seconds of CPU before it fails; with them the body is
// refused at its first byte past a limit, having cost nothing but the scan.
#ifndef STRATA_SCHEDULER_FRONTDOOR_JSON_SHAPE_H_
#define STRATA_SCHEDULER_FRONTDOOR_JSON_SHAPE_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"

namespace strata::frontdoor {

// 0 means no limit.
struct JsonShapeLimits {
  int max_depth = 0;          // arrays and objects open at once
  uint64_t max_elements = 0;  // containers plus separators (','): about the values and members it holds
};

// A scan of one document fed in pieces. Not a validator: it follows strings (and their escapes) only
// so that brackets and commas inside them do not count; the parser still judges the syntax. Cheap: no
// allocation, one pass over the bytes. Not thread-safe (one body, one reader).
class JsonShapeScanner {
 public:
  explicit JsonShapeScanner(JsonShapeLimits limits) : limits_(limits) {}

  // Scans the next bytes. InvalidArgument (HTTP 400, OpenAI code `invalid_request_error`) at the first
  // byte past a limit, naming the limit; after that, the same error for anything fed.
  absl::Status Feed(std::string_view bytes);

 private:
  const JsonShapeLimits limits_;
  int depth_ = 0;
  uint64_t elements_ = 0;
  bool in_string_ = false;
  bool escaped_ = false;
  absl::Status error_;
};

// The whole check on a whole document.
absl::Status CheckJsonShape(std::string_view document, const JsonShapeLimits& limits);

}  // namespace strata::frontdoor

#endif  // STRATA_SCHEDULER_FRONTDOOR_JSON_SHAPE_H_
