// The `pre_tokenizer` of a tokenizer.json: how text is cut into the pieces that BPE encodes one by one.
// Supported: Split (Regex or String pattern, behavior Isolated), ByteLevel (add_prefix_space,
// use_regex), and Sequence of those. Any other type or option is refused at load.
#ifndef STRATA_MODEL_PRE_TOKENIZER_H_
#define STRATA_MODEL_PRE_TOKENIZER_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "model/tokenizer_json.h"

struct pcre2_real_code_8;  // PCRE2's compiled pattern (pcre2_code with 8-bit code units)

namespace strata::model {

// A PCRE2 pattern compiled once (UTF + UCP, JIT where available). Immutable; thread-safe.
class Regex {
 public:
  enum class Syntax { kRegex, kLiteral };

  // The error message names the problem and its offset in `pattern`, not the file.
  static absl::StatusOr<Regex> Compile(std::string_view pattern, Syntax syntax);

  // Appends to `pieces` the Isolated split of `text` (valid UTF-8): every non-empty match is a piece,
  // and so is every non-empty gap between matches. Fails only if PCRE2 does (e.g. a resource limit).
  absl::Status SplitIsolated(std::string_view text, std::vector<std::string>& pieces) const;

 private:
  struct CodeDeleter {
    void operator()(pcre2_real_code_8* code) const;
  };
  std::unique_ptr<pcre2_real_code_8, CodeDeleter> code_;
};

// Immutable after load; thread-safe.
class PreTokenizer {
 public:
  // `config` is the tokenizer.json `pre_tokenizer` value (null: the text is one piece).
  static absl::StatusOr<PreTokenizer> FromJson(const nlohmann::json& config, const JsonLocation& where);

  // Whether a ByteLevel step is present, i.e. the model's vocabulary is written in the byte-level alphabet.
  bool has_byte_level() const { return has_byte_level_; }

  // Appends the pieces of `text` (valid UTF-8) to `pieces`, as raw bytes; empty pieces are dropped.
  absl::Status Split(std::string_view text, std::vector<std::string>& pieces) const;

 private:
  struct Step {
    bool add_prefix_space = false;  // prepend ' ' to each piece that does not start with one
    std::optional<Regex> regex;     // then split each piece with it (Isolated)
  };

  absl::Status Append(const nlohmann::json& config, const JsonLocation& where);

  std::vector<Step> steps_;
  bool has_byte_level_ = false;
};

}  // namespace strata::model

#endif  // STRATA_MODEL_PRE_TOKENIZER_H_
