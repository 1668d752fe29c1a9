// Reading the fields of a tokenizer.json: typed accessors that turn a missing field or a wrong type into
// an absl::InvalidArgumentError of one line naming the file and the field, e.g.
//   "tokenizer.json: model.merges[3] names 'xy' which is not in model.vocab".
#ifndef STRATA_MODEL_TOKENIZER_JSON_H_
#define STRATA_MODEL_TOKENIZER_JSON_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace strata::model {

// A position inside one tokenizer.json, for error messages.
class JsonLocation {
 public:
  JsonLocation(std::string_view source, std::string path) : source_(source), path_(std::move(path)) {}

  JsonLocation Field(std::string_view key) const;  // "model" -> "model.merges"
  JsonLocation Element(size_t index) const;        // "model.merges" -> "model.merges[3]"

  // InvalidArgumentError "<source>: <path> <problem>" (or "<source>: <problem>" at the root).
  absl::Status Error(std::string_view problem) const;

  std::string_view source() const { return source_; }
  const std::string& path() const { return path_; }

 private:
  std::string source_;
  std::string path_;
};

// The field `key` of `object` (which must be a JSON object). Missing -> error.
absl::StatusOr<const nlohmann::json*> RequiredField(const nlohmann::json& object, std::string_view key,
                                                    const JsonLocation& where);
// The field `key`, or nullptr when it is missing or null.
absl::StatusOr<const nlohmann::json*> OptionalField(const nlohmann::json& object, std::string_view key,
                                                    const JsonLocation& where);
absl::StatusOr<std::string> RequiredString(const nlohmann::json& object, std::string_view key,
                                           const JsonLocation& where);
// A boolean field; `default_value` when it is missing or null.
absl::StatusOr<bool> OptionalBool(const nlohmann::json& object, std::string_view key, bool default_value,
                                  const JsonLocation& where);
// A string field; "" when it is missing or null.
absl::StatusOr<std::string> OptionalString(const nlohmann::json& object, std::string_view key,
                                           const JsonLocation& where);
// A non-negative integer that fits int32_t.
absl::StatusOr<int32_t> TokenIdValue(const nlohmann::json& value, const JsonLocation& where);

}  // namespace strata::model

#endif  // STRATA_MODEL_TOKENIZER_JSON_H_
