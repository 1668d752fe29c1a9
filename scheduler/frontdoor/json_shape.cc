#include "scheduler/frontdoor/json_shape.h"

#include <cstring>

#include "common/strings.h"
#include "scheduler/frontdoor/request.h"

namespace strata::frontdoor {

absl::Status JsonShapeScanner::Feed(std::string_view bytes) {
  if (!error_.ok()) return error_;
  const char* p = bytes.data();
  const char* const end = p + bytes.size();
  while (p < end) {
    if (in_string_) {
      if (escaped_) {
        escaped_ = false;
        ++p;
        continue;
      }
      // Skip to the next quote or backslash: most of a body's bytes are inside strings.
      const void* quote = std::memchr(p, '"', static_cast<size_t>(end - p));
      const char* stop = quote == nullptr ? end : static_cast<const char*>(quote);
      const void* backslash = std::memchr(p, '\\', static_cast<size_t>(stop - p));
      if (backslash != nullptr) {
        p = static_cast<const char*>(backslash) + 1;
        escaped_ = true;
        continue;
      }
      if (quote == nullptr) return absl::OkStatus();
      in_string_ = false;
      p = stop + 1;
      continue;
    }
    switch (*p++) {
      case '"':
        in_string_ = true;
        break;
      case '[':
      case '{':
        ++elements_;
        if (++depth_ > limits_.max_depth && limits_.max_depth > 0) {
          error_ = ApiError(absl::StatusCode::kInvalidArgument,
                            StrCat("The JSON body nests arrays and objects deeper than this server accepts (",
                                   limits_.max_depth, " levels)."));
          return error_;
        }
        break;
      case ']':
      case '}':
        if (depth_ > 0) --depth_;
        break;
      case ',':
        ++elements_;
        break;
      default:
        continue;
    }
    if (limits_.max_elements > 0 && elements_ > limits_.max_elements) {
      error_ = ApiError(absl::StatusCode::kInvalidArgument,
                        StrCat("The JSON body holds more elements than this server accepts (", limits_.max_elements,
                               "). Send a shorter prompt."));
      return error_;
    }
  }
  return absl::OkStatus();
}

absl::Status CheckJsonShape(std::string_view document, const JsonShapeLimits& limits) {
  JsonShapeScanner scanner(limits);
  return scanner.Feed(document);
}

}  // namespace strata::frontdoor
