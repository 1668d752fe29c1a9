// The `normalizer` of a tokenizer.json: Unicode normalization forms (NFC, NFD, NFKC, NFKD, through ICU),
// alone or in a Sequence. Any other normalizer type is refused at load.
#ifndef STRATA_MODEL_NORMALIZER_H_
#define STRATA_MODEL_NORMALIZER_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "unicode/normalizer2.h"
#include "model/tokenizer_json.h"

namespace strata::model {

// Immutable after load; thread-safe.
class Normalizer {
 public:
  // `config` is the tokenizer.json `normalizer` value (null: identity).
  static absl::StatusOr<Normalizer> FromJson(const nlohmann::json& config, const JsonLocation& where);

  bool is_identity() const { return forms_.empty(); }

  // `text` (valid UTF-8) normalized. Fails only if ICU does.
  absl::StatusOr<std::string> Apply(std::string_view text) const;

 private:
  absl::Status Append(const nlohmann::json& config, const JsonLocation& where);

  // ICU's own instances, which live as long as the process; applied in order.
  std::vector<const icu::Normalizer2*> forms_;
};

}  // namespace strata::model

#endif  // STRATA_MODEL_NORMALIZER_H_
