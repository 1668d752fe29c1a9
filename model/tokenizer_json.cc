#include "model/tokenizer_json.h"

#include <cstdint>
#include <limits>

#include "common/strings.h"
#include "model/json_errors.h"

namespace strata::model {

JsonLocation JsonLocation::Field(std::string_view key) const {
  return JsonLocation(source_, path_.empty() ? std::string(key) : strata::StrCat(path_, ".", key));
}

JsonLocation JsonLocation::Element(size_t index) const {
  return JsonLocation(source_, strata::StrCat(path_, "[", index, "]"));
}

absl::Status JsonLocation::Error(std::string_view problem) const {
  // Paths and problems quote tokens from the file, which may hold any character.
  if (path_.empty()) return absl::InvalidArgumentError(OneLine(strata::StrCat(source_, ": ", problem)));
  return absl::InvalidArgumentError(OneLine(strata::StrCat(source_, ": ", path_, " ", problem)));
}

absl::StatusOr<const nlohmann::json*> OptionalField(const nlohmann::json& object, std::string_view key,
                                                    const JsonLocation& where) {
  if (!object.is_object()) return where.Error(strata::StrCat("must be an object, not ", object.type_name()));
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<const nlohmann::json*> RequiredField(const nlohmann::json& object, std::string_view key,
                                                    const JsonLocation& where) {
  const absl::StatusOr<const nlohmann::json*> field = OptionalField(object, key, where);
  if (!field.ok()) return field.status();
  if (*field == nullptr) return where.Field(key).Error("is missing");
  return *field;
}

absl::StatusOr<std::string> RequiredString(const nlohmann::json& object, std::string_view key,
                                           const JsonLocation& where) {
  const absl::StatusOr<const nlohmann::json*> field = RequiredField(object, key, where);
  if (!field.ok()) return field.status();
  if (!(*field)->is_string()) {
    return where.Field(key).Error(strata::StrCat("must be a string, not ", (*field)->type_name()));
  }
  return (*field)->get<std::string>();
}

absl::StatusOr<std::string> OptionalString(const nlohmann::json& object, std::string_view key,
                                           const JsonLocation& where) {
  const absl::StatusOr<const nlohmann::json*> field = OptionalField(object, key, where);
  if (!field.ok()) return field.status();
  if (*field == nullptr) return std::string();
  if (!(*field)->is_string()) {
    return where.Field(key).Error(strata::StrCat("must be a string, not ", (*field)->type_name()));
  }
  return (*field)->get<std::string>();
}

absl::StatusOr<bool> OptionalBool(const nlohmann::json& object, std::string_view key, bool default_value,
                                  const JsonLocation& where) {
  const absl::StatusOr<const nlohmann::json*> field = OptionalField(object, key, where);
  if (!field.ok()) return field.status();
  if (*field == nullptr) return default_value;
  if (!(*field)->is_boolean()) {
    return where.Field(key).Error(strata::StrCat("must be true or false, not ", (*field)->type_name()));
  }
  return (*field)->get<bool>();
}

absl::StatusOr<int32_t> TokenIdValue(const nlohmann::json& value, const JsonLocation& where) {
  if (value.is_number_unsigned() && value.get<uint64_t>() <= std::numeric_limits<int32_t>::max()) {
    return static_cast<int32_t>(value.get<uint64_t>());
  }
  return where.Error(strata::StrCat("must be a token id (an integer from 0 to 2^31-1), not ", value.dump()));
}

}  // namespace strata::model
