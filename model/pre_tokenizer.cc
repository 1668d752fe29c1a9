#include "model/pre_tokenizer.h"

#include <cstdint>
#include <utility>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/status.h"
#include "common/strings.h"
#include "model/byte_level.h"
#include "model/utf8.h"

namespace strata::model {
namespace {

std::string Pcre2ErrorMessage(int error_code) {
  PCRE2_UCHAR buffer[256];
  const int length = pcre2_get_error_message(error_code, buffer, sizeof(buffer));
  if (length < 0) return strata::StrCat("PCRE2 error ", error_code);
  return std::string(reinterpret_cast<const char*>(buffer), static_cast<size_t>(length));
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

}  // namespace

void Regex::CodeDeleter::operator()(pcre2_real_code_8* code) const { pcre2_code_free(code); }

absl::StatusOr<Regex> Regex::Compile(std::string_view pattern, Syntax syntax) {
  // PCRE2_LITERAL admits UTF but not UCP; UCP makes \s, \w, \d and POSIX classes follow Unicode
  // properties, as Oniguruma (which `tokenizers` uses) does, and MULTILINE makes ^ and $ line anchors as
  // in Oniguruma's Ruby syntax. Known difference: PCRE2 10.42 still counts U+180E (Mongolian vowel
  // separator) as \s, Oniguruma does not; Llama 3's and Qwen2's patterns split such text differently.
  const uint32_t options =
      syntax == Syntax::kLiteral ? (PCRE2_UTF | PCRE2_LITERAL) : (PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &error_code,
                                   &error_offset, nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(
        strata::StrCat("does not compile at offset ", error_offset, ": ", Pcre2ErrorMessage(error_code)));
  }
  Regex regex;
  regex.code_.reset(code);
  // Without JIT (unsupported CPU, or no executable memory) matching falls back to the interpreter.
  (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return regex;
}

absl::Status Regex::SplitIsolated(std::string_view text, std::vector<std::string>& pieces) const {
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> match(pcre2_match_data_create_from_pattern(code_.get(), nullptr));
  if (match == nullptr) return absl::ResourceExhaustedError("out of memory for PCRE2 match data");
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t gap_start = 0;  // end of the last match
  size_t offset = 0;     // where the next search starts
  while (offset <= text.size()) {
    // The text was validated as UTF-8 when it entered Encode.
    int rc = pcre2_match(code_.get(), subject, text.size(), offset, PCRE2_NO_UTF_CHECK, match.get(), nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // The JIT's 32 KiB machine stack can run out on long runs; the interpreter keeps its frames on the heap.
      rc = pcre2_match(code_.get(), subject, text.size(), offset, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, match.get(),
                       nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return absl::ResourceExhaustedError(
          strata::StrCat("pre-tokenizer regex failed at byte ", offset, ": ", Pcre2ErrorMessage(rc)));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
    const size_t start = ovector[0];
    const size_t end = ovector[1];
    if (start >= end) {
      // An empty match splits nothing; step over one character so the search advances.
      if (start >= text.size()) break;
      offset = start + ScanUtf8Sequence(text.substr(start)).length;
      continue;
    }
    if (start > gap_start) pieces.emplace_back(text.substr(gap_start, start - gap_start));
    pieces.emplace_back(text.substr(start, end - start));
    gap_start = offset = end;
  }
  if (gap_start < text.size()) pieces.emplace_back(text.substr(gap_start));
  return absl::OkStatus();
}

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(const nlohmann::json& config, const JsonLocation& where) {
  PreTokenizer pre_tokenizer;
  if (!config.is_null()) STRATA_RETURN_IF_ERROR(pre_tokenizer.Append(config, where));
  return pre_tokenizer;
}

absl::Status PreTokenizer::Append(const nlohmann::json& config, const JsonLocation& where) {
  STRATA_ASSIGN_OR_RETURN(const std::string type, RequiredString(config, "type", where));
  if (type == "Sequence") {
    const JsonLocation list_where = where.Field("pretokenizers");
    STRATA_ASSIGN_OR_RETURN(const nlohmann::json* steps, RequiredField(config, "pretokenizers", where));
    if (!steps->is_array()) return list_where.Error("must be an array");
    for (size_t i = 0; i < steps->size(); ++i) STRATA_RETURN_IF_ERROR(Append((*steps)[i], list_where.Element(i)));
    return absl::OkStatus();
  }
  if (type == "Split") {
    // Strata keeps pieces as raw bytes; a Split after ByteLevel would have to see the byte-level alphabet.
    if (has_byte_level_) {
      return where.Error("is a Split after a ByteLevel pre-tokenizer, which Strata does not support");
    }
    STRATA_ASSIGN_OR_RETURN(const std::string behavior, RequiredString(config, "behavior", where));
    if (behavior != "Isolated") {
      return where.Field("behavior")
          .Error(strata::StrCat("is '", behavior, "', which Strata does not support (supported: Isolated)"));
    }
    STRATA_ASSIGN_OR_RETURN(const bool invert, OptionalBool(config, "invert", false, where));
    if (invert) return where.Field("invert").Error("is true, which Strata does not support");
    const JsonLocation pattern_where = where.Field("pattern");
    STRATA_ASSIGN_OR_RETURN(const nlohmann::json* pattern, RequiredField(config, "pattern", where));
    if (!pattern->is_object() || pattern->size() != 1) {
      return pattern_where.Error("must be an object with one field, Regex or String");
    }
    const auto field = pattern->begin();
    const std::string& syntax_name = field.key();
    const nlohmann::json& value = field.value();
    Regex::Syntax syntax;
    if (syntax_name == "Regex") {
      syntax = Regex::Syntax::kRegex;
    } else if (syntax_name == "String") {
      syntax = Regex::Syntax::kLiteral;
    } else {
      return pattern_where.Error(strata::StrCat("has '", syntax_name, "', which must be Regex or String"));
    }
    if (!value.is_string()) return pattern_where.Field(syntax_name).Error("must be a string");
    absl::StatusOr<Regex> regex = Regex::Compile(value.get<std::string>(), syntax);
    if (!regex.ok()) return pattern_where.Field(syntax_name).Error(std::string(regex.status().message()));
    steps_.push_back(Step{.add_prefix_space = false, .regex = std::move(*regex)});
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    STRATA_ASSIGN_OR_RETURN(const bool add_prefix_space, OptionalBool(config, "add_prefix_space", true, where));
    STRATA_ASSIGN_OR_RETURN(const bool use_regex, OptionalBool(config, "use_regex", true, where));
    Step step{.add_prefix_space = add_prefix_space, .regex = std::nullopt};
    if (use_regex) {
      absl::StatusOr<Regex> regex = Regex::Compile(kGpt2SplitPattern, Regex::Syntax::kRegex);
      STRATA_CHECK(regex.ok());  // a constant pattern
      step.regex = std::move(*regex);
    }
    steps_.push_back(std::move(step));
    has_byte_level_ = true;
    return absl::OkStatus();
  }
  return where.Error(
      strata::StrCat("has type '", type, "', which Strata does not support (supported: Split, ByteLevel, Sequence)"));
}

absl::Status PreTokenizer::Split(std::string_view text, std::vector<std::string>& pieces) const {
  if (text.empty()) return absl::OkStatus();
  std::vector<std::string> current;
  current.emplace_back(text);
  std::vector<std::string> next;
  for (const Step& step : steps_) {
    next.clear();
    for (std::string& piece : current) {
      if (step.add_prefix_space && !piece.starts_with(' ')) piece.insert(piece.begin(), ' ');
      if (step.regex.has_value()) {
        STRATA_RETURN_IF_ERROR(step.regex->SplitIsolated(piece, next));
      } else {
        next.push_back(std::move(piece));
      }
    }
    current.swap(next);
  }
  for (std::string& piece : current) {
    if (!piece.empty()) pieces.push_back(std::move(piece));
  }
  return absl::OkStatus();
}

}  // namespace strata::model
