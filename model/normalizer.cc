#include "model/normalizer.h"

#include <cstdint>

#include "common/status.h"
#include "common/strings.h"
#include "unicode/bytestream.h"
#include "unicode/stringpiece.h"
#include "unicode/utypes.h"

namespace strata::model {

absl::StatusOr<Normalizer> Normalizer::FromJson(const nlohmann::json& config, const JsonLocation& where) {
  Normalizer normalizer;
  if (!config.is_null()) STRATA_RETURN_IF_ERROR(normalizer.Append(config, where));
  return normalizer;
}

absl::Status Normalizer::Append(const nlohmann::json& config, const JsonLocation& where) {
  STRATA_ASSIGN_OR_RETURN(const std::string type, RequiredString(config, "type", where));
  if (type == "Sequence") {
    STRATA_ASSIGN_OR_RETURN(const nlohmann::json* steps, RequiredField(config, "normalizers", where));
    if (!steps->is_array()) return where.Field("normalizers").Error("must be an array");
    for (size_t i = 0; i < steps->size(); ++i) {
      STRATA_RETURN_IF_ERROR(Append((*steps)[i], where.Field("normalizers").Element(i)));
    }
    return absl::OkStatus();
  }
  UErrorCode error = U_ZERO_ERROR;
  const icu::Normalizer2* form = nullptr;
  if (type == "NFC") {
    form = icu::Normalizer2::getNFCInstance(error);
  } else if (type == "NFD") {
    form = icu::Normalizer2::getNFDInstance(error);
  } else if (type == "NFKC") {
    form = icu::Normalizer2::getNFKCInstance(error);
  } else if (type == "NFKD") {
    form = icu::Normalizer2::getNFKDInstance(error);
  } else {
    return where.Error(strata::StrCat("has type '", type,
                                      "', which Strata does not support (supported: NFC, NFD, NFKC, NFKD, Sequence)"));
  }
  if (U_FAILURE(error) || form == nullptr) {
    return where.Error(strata::StrCat("type ", type, ": ICU has no such normalizer: ", u_errorName(error)));
  }
  forms_.push_back(form);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Normalizer::Apply(std::string_view text) const {
  std::string current(text);
  for (const icu::Normalizer2* form : forms_) {
    if (current.size() > static_cast<size_t>(INT32_MAX)) {  // ICU counts bytes in int32_t
      return absl::InvalidArgumentError(strata::StrCat("text of ", current.size(), " bytes is too long to normalize"));
    }
    UErrorCode error = U_ZERO_ERROR;
    const icu::StringPiece piece(current.data(), static_cast<int32_t>(current.size()));
    if (form->isNormalizedUTF8(piece, error) && U_SUCCESS(error)) continue;
    error = U_ZERO_ERROR;
    std::string normalized;
    icu::StringByteSink<std::string> sink(&normalized, static_cast<int32_t>(current.size()));
    form->normalizeUTF8(0, piece, sink, nullptr, error);
    if (U_FAILURE(error)) {
      return absl::InternalError(strata::StrCat("Unicode normalization failed in ICU: ", u_errorName(error)));
    }
    current = std::move(normalized);
  }
  return current;
}

}  // namespace strata::model
