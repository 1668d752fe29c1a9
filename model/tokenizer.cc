#include "model/tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "common/file.h"
#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"
#include "model/added_tokens.h"
#include "model/bpe.h"
#include "model/byte_level.h"
#include "model/json_errors.h"
#include "model/normalizer.h"
#include "model/pre_tokenizer.h"
#include "model/tokenizer_json.h"
#include "model/utf8.h"

namespace strata::model {
namespace {

// Ids index dense tables; real vocabularies stay far below this (Llama 3: 128,256).
// Ids index dense tables: a bound keeps a corrupt id from costing gigabytes (the largest vocabularies
// published hold about 256K tokens).
constexpr int32_t kMaxVocabSize = 1 << 21;

// One item of a TemplateProcessing `single` template: the encoded text, or fixed special-token ids.
struct TemplateItem {
  bool is_sequence = false;
  std::vector<int32_t> ids;
};
using Template = std::vector<TemplateItem>;

absl::Status ParseTemplateProcessing(const nlohmann::json& config, const JsonLocation& where,
                                     std::vector<Template>& templates) {
  STRATA_ASSIGN_OR_RETURN(const nlohmann::json* special_tokens, OptionalField(config, "special_tokens", where));
  const JsonLocation single_where = where.Field("single");
  STRATA_ASSIGN_OR_RETURN(const nlohmann::json* single, RequiredField(config, "single", where));
  if (!single->is_array()) return single_where.Error("must be an array of {\"SpecialToken\"} / {\"Sequence\"} items");
  Template items;
  for (size_t i = 0; i < single->size(); ++i) {
    const JsonLocation item_where = single_where.Element(i);
    const nlohmann::json& item = (*single)[i];
    if (!item.is_object() || item.size() != 1) {
      return item_where.Error("must be an object with one field, SpecialToken or Sequence");
    }
    const auto field = item.begin();
    const std::string& kind = field.key();
    const nlohmann::json& body = field.value();
    STRATA_ASSIGN_OR_RETURN(const std::string name, RequiredString(body, "id", item_where.Field(kind)));
    if (kind == "Sequence") {
      if (name != "A") {
        return item_where.Field(kind).Field("id").Error(
            strata::StrCat("is '", name, "'; a single-sequence template can only use A"));
      }
      items.push_back(TemplateItem{.is_sequence = true, .ids = {}});
    } else if (kind == "SpecialToken") {
      const JsonLocation token_where = where.Field("special_tokens").Field(name);
      if (special_tokens == nullptr || !special_tokens->is_object() || !special_tokens->contains(name)) {
        return item_where.Error(
            strata::StrCat("names special token '", name, "', which special_tokens does not define"));
      }
      STRATA_ASSIGN_OR_RETURN(const nlohmann::json* ids, RequiredField(special_tokens->at(name), "ids", token_where));
      if (!ids->is_array()) return token_where.Field("ids").Error("must be an array of ids");
      TemplateItem special{.is_sequence = false, .ids = {}};
      for (size_t j = 0; j < ids->size(); ++j) {
        STRATA_ASSIGN_OR_RETURN(const int32_t id, TokenIdValue((*ids)[j], token_where.Field("ids").Element(j)));
        special.ids.push_back(id);
      }
      items.push_back(std::move(special));
    } else {
      return item_where.Error(strata::StrCat("has '", kind, "', which must be SpecialToken or Sequence"));
    }
  }
  templates.push_back(std::move(items));
  return absl::OkStatus();
}

absl::Status ParsePostProcessor(const nlohmann::json& config, const JsonLocation& where,
                                std::vector<Template>& templates) {
  if (config.is_null()) return absl::OkStatus();
  STRATA_ASSIGN_OR_RETURN(const std::string type, RequiredString(config, "type", where));
  if (type == "Sequence") {
    const JsonLocation list_where = where.Field("processors");
    STRATA_ASSIGN_OR_RETURN(const nlohmann::json* steps, RequiredField(config, "processors", where));
    if (!steps->is_array()) return list_where.Error("must be an array");
    for (size_t i = 0; i < steps->size(); ++i) {
      STRATA_RETURN_IF_ERROR(ParsePostProcessor((*steps)[i], list_where.Element(i), templates));
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") return absl::OkStatus();  // trims offsets only; ids are unchanged
  if (type == "TemplateProcessing") return ParseTemplateProcessing(config, where, templates);
  return where.Error(strata::StrCat(
      "has type '", type, "', which Strata does not support (supported: TemplateProcessing, ByteLevel, Sequence)"));
}

absl::Status CheckDecoder(const nlohmann::json& config, const JsonLocation& where) {
  if (config.is_null()) {
    return where.Error("is null; Strata decodes byte-level BPE only and needs the ByteLevel decoder");
  }
  STRATA_ASSIGN_OR_RETURN(const std::string type, RequiredString(config, "type", where));
  if (type == "ByteLevel") return absl::OkStatus();
  if (type == "Sequence") {
    const JsonLocation list_where = where.Field("decoders");
    STRATA_ASSIGN_OR_RETURN(const nlohmann::json* steps, RequiredField(config, "decoders", where));
    if (!steps->is_array() || steps->empty()) return list_where.Error("must be a non-empty array");
    for (size_t i = 0; i < steps->size(); ++i) STRATA_RETURN_IF_ERROR(CheckDecoder((*steps)[i], list_where.Element(i)));
    return absl::OkStatus();
  }
  return where.Error(strata::StrCat("has type '", type, "', which Strata does not support (supported: ByteLevel)"));
}

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const nlohmann::json& root, const JsonLocation& where) {
  std::vector<AddedToken> tokens;
  STRATA_ASSIGN_OR_RETURN(const nlohmann::json* list, OptionalField(root, "added_tokens", where));
  if (list == nullptr) return tokens;
  const JsonLocation list_where = where.Field("added_tokens");
  if (!list->is_array()) return list_where.Error(strata::StrCat("must be an array, not ", list->type_name()));
  for (size_t i = 0; i < list->size(); ++i) {
    const JsonLocation item_where = list_where.Element(i);
    const nlohmann::json& item = (*list)[i];
    AddedToken token;
    STRATA_ASSIGN_OR_RETURN(token.content, RequiredString(item, "content", item_where));
    if (token.content.empty()) return item_where.Field("content").Error("is empty");
    STRATA_ASSIGN_OR_RETURN(const nlohmann::json* id, RequiredField(item, "id", item_where));
    STRATA_ASSIGN_OR_RETURN(token.id, TokenIdValue(*id, item_where.Field("id")));
    STRATA_ASSIGN_OR_RETURN(token.special, OptionalBool(item, "special", false, item_where));
    STRATA_ASSIGN_OR_RETURN(token.lstrip, OptionalBool(item, "lstrip", false, item_where));
    STRATA_ASSIGN_OR_RETURN(token.rstrip, OptionalBool(item, "rstrip", false, item_where));
    STRATA_ASSIGN_OR_RETURN(token.single_word, OptionalBool(item, "single_word", false, item_where));
    // `tokenizers` defaults `normalized` to true for ordinary added tokens and false for special ones.
    STRATA_ASSIGN_OR_RETURN(token.normalized, OptionalBool(item, "normalized", !token.special, item_where));
    tokens.push_back(std::move(token));
  }
  return tokens;
}

}  // namespace

struct Tokenizer::Impl {
  enum class IdKind : uint8_t { kNone, kModel, kAdded, kSpecial };

  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  BpeModel model;
  AddedTokenMatcher raw_added_tokens;                         // added tokens with normalized = false
  AddedTokenMatcher normalized_added_tokens;                  // the others, their content normalized
  std::vector<Template> templates;                            // applied in order with SpecialTokens::kInclude
  absl::flat_hash_map<std::string, int32_t> added_token_ids;  // content -> id

  // Indexed by id, vocab_size entries.
  std::vector<IdKind> id_kinds;
  std::vector<std::string> tokens;       // as written in tokenizer.json
  std::vector<std::string> token_bytes;  // what Decode emits

  absl::Status EncodeText(std::string_view text, std::vector<int32_t>& ids) const;
};

absl::Status Tokenizer::Impl::EncodeText(std::string_view text, std::vector<int32_t>& ids) const {
  std::string normalized_storage;
  std::string_view normalized = text;
  if (!normalizer.is_identity()) {
    STRATA_ASSIGN_OR_RETURN(normalized_storage, normalizer.Apply(text));
    normalized = normalized_storage;
  }
  std::vector<TextSegment> segments;
  if (normalized_added_tokens.empty()) {
    segments.push_back({normalized, -1});
  } else {
    normalized_added_tokens.Split(normalized, segments);
  }
  std::vector<std::string> pieces;
  for (const TextSegment& segment : segments) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
      continue;
    }
    pieces.clear();
    STRATA_RETURN_IF_ERROR(pre_tokenizer.Split(segment.text, pieces));
    for (const std::string& piece : pieces) model.Encode(piece, ids);
  }
  return absl::OkStatus();
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<Tokenizer> Tokenizer::FromFile(const std::filesystem::path& tokenizer_json) {
  STRATA_ASSIGN_OR_RETURN(const std::string contents, ReadFile(tokenizer_json));
  return FromJson(contents, tokenizer_json.string());
}

absl::StatusOr<Tokenizer> Tokenizer::FromJson(std::string_view json, std::string_view source_name) {
  const JsonLocation root_where(source_name, "");
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    return root_where.Error(strata::StrCat("invalid JSON: ", DescribeJsonError(e)));
  }
  if (!root.is_object()) return root_where.Error(strata::StrCat("must hold a JSON object, not ", root.type_name()));

  auto impl = std::make_unique<Impl>();
  try {
    STRATA_ASSIGN_OR_RETURN(const nlohmann::json* model, RequiredField(root, "model", root_where));
    STRATA_ASSIGN_OR_RETURN(impl->model, BpeModel::FromJson(*model, root_where.Field("model")));

    // Truncation and padding change the ids; running without them would give wrong ids silently.
    for (const char* unsupported : {"truncation", "padding"}) {
      if (auto it = root.find(unsupported); it != root.end() && !it->is_null()) {
        return root_where.Field(unsupported).Error("is set, which Strata does not support (it must be null)");
      }
    }
    const auto section = [&root](const char* key) -> const nlohmann::json& {
      static const nlohmann::json kNull;
      const auto it = root.find(key);
      return it == root.end() ? kNull : *it;
    };
    STRATA_ASSIGN_OR_RETURN(impl->normalizer,
                            Normalizer::FromJson(section("normalizer"), root_where.Field("normalizer")));
    STRATA_ASSIGN_OR_RETURN(impl->pre_tokenizer,
                            PreTokenizer::FromJson(section("pre_tokenizer"), root_where.Field("pre_tokenizer")));
    if (!impl->pre_tokenizer.has_byte_level()) {
      return root_where.Field("pre_tokenizer").Error("has no ByteLevel step; Strata supports byte-level BPE only");
    }
    STRATA_RETURN_IF_ERROR(CheckDecoder(section("decoder"), root_where.Field("decoder")));
    STRATA_RETURN_IF_ERROR(
        ParsePostProcessor(section("post_processor"), root_where.Field("post_processor"), impl->templates));
    STRATA_ASSIGN_OR_RETURN(std::vector<AddedToken> added, ParseAddedTokens(root, root_where));

    // Id tables: the model vocabulary first, then added tokens, which win where both name an id.
    int32_t max_id = -1;
    for (const auto& [token, id] : impl->model.vocab()) max_id = std::max(max_id, id);
    for (const AddedToken& token : added) max_id = std::max(max_id, token.id);
    if (max_id >= kMaxVocabSize) {
      return root_where.Error(strata::StrCat("uses token id ", max_id, "; Strata supports ids below ", kMaxVocabSize));
    }
    const size_t vocab_size = static_cast<size_t>(max_id) + 1;
    impl->id_kinds.assign(vocab_size, Impl::IdKind::kNone);
    impl->tokens.assign(vocab_size, std::string());
    impl->token_bytes.assign(vocab_size, std::string());
    for (const auto& [token, id] : impl->model.vocab()) {
      impl->id_kinds[id] = Impl::IdKind::kModel;
      impl->tokens[id] = token;
      // As `tokenizers`' ByteLevel decoder: a token with a character outside the alphabet decodes as is.
      impl->token_bytes[id] = ByteLevelToBytes(token).value_or(token);
    }
    std::vector<AddedToken> raw_tokens;
    std::vector<AddedToken> normalized_tokens;
    for (size_t i = 0; i < added.size(); ++i) {
      AddedToken& token = added[i];
      impl->id_kinds[token.id] = token.special ? Impl::IdKind::kSpecial : Impl::IdKind::kAdded;
      impl->tokens[token.id] = token.content;
      impl->token_bytes[token.id] = token.content;
      impl->added_token_ids.insert_or_assign(token.content, token.id);
      // As in `tokenizers`, tokens matched in the raw text are cut out first, the others afterwards in
      // the normalized remainder (in normalized form).
      if (token.normalized) {
        absl::StatusOr<std::string> normalized = impl->normalizer.Apply(token.content);
        if (!normalized.ok()) {
          return root_where.Field("added_tokens")
              .Element(i)
              .Error(strata::StrCat("cannot be normalized: ", normalized.status().message()));
        }
        token.content = *std::move(normalized);
        normalized_tokens.push_back(std::move(token));
      } else {
        raw_tokens.push_back(std::move(token));
      }
    }
    for (const Template& items : impl->templates) {
      for (const TemplateItem& item : items) {
        for (const int32_t id : item.ids) {
          if (static_cast<size_t>(id) >= vocab_size || impl->id_kinds[id] == Impl::IdKind::kNone) {
            return root_where.Field("post_processor")
                .Error(strata::StrCat("adds token id ", id, ", which neither model.vocab nor added_tokens defines"));
          }
        }
      }
    }
    impl->raw_added_tokens = AddedTokenMatcher(std::move(raw_tokens));
    impl->normalized_added_tokens = AddedTokenMatcher(std::move(normalized_tokens));
  } catch (const nlohmann::json::exception& e) {
    // The accessors above check types first; this is a backstop so that no exception leaves the library.
    return root_where.Error(DescribeJsonError(e));
  }
  return Tokenizer(std::move(impl));
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text, SpecialTokens special) const {
  if (const size_t bad = FindInvalidUtf8(text); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(
        strata::StrCat("Encode: text is not valid UTF-8 at byte ", bad, " of ", text.size()));
  }
  std::vector<int32_t> ids;
  std::vector<TextSegment> segments;
  if (impl_->raw_added_tokens.empty()) {
    if (!text.empty()) segments.push_back({text, -1});
  } else {
    impl_->raw_added_tokens.Split(text, segments);
  }
  for (const TextSegment& segment : segments) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
    } else {
      STRATA_RETURN_IF_ERROR(impl_->EncodeText(segment.text, ids));
    }
  }
  if (special == SpecialTokens::kInclude) {
    for (const Template& items : impl_->templates) {
      std::vector<int32_t> wrapped;
      wrapped.reserve(ids.size() + items.size());
      for (const TemplateItem& item : items) {
        const std::vector<int32_t>& part = item.is_sequence ? ids : item.ids;
        wrapped.insert(wrapped.end(), part.begin(), part.end());
      }
      ids = std::move(wrapped);
    }
  }
  return ids;
}

void Tokenizer::AppendTokenBytes(int32_t id, SpecialTokens special, std::string& bytes) const {
  const bool known =
      id >= 0 && static_cast<size_t>(id) < impl_->id_kinds.size() && impl_->id_kinds[id] != Impl::IdKind::kNone;
  if (!known) {
    bytes.append(kUtf8ReplacementCharacter);
    return;
  }
  if (special == SpecialTokens::kSkip && impl_->id_kinds[id] == Impl::IdKind::kSpecial) return;
  bytes.append(impl_->token_bytes[id]);
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids, SpecialTokens special) const {
  std::string bytes;
  for (const int32_t id : ids) AppendTokenBytes(id, special, bytes);
  std::string text;
  AppendUtf8Lossy(bytes, text);
  return text;
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->id_kinds.size()); }

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (const auto it = impl_->added_token_ids.find(absl::string_view(token.data(), token.size()));
      it != impl_->added_token_ids.end())
    return it->second;
  if (const auto it = impl_->model.vocab().find(absl::string_view(token.data(), token.size()));
      it != impl_->model.vocab().end())
    return it->second;
  return std::nullopt;
}

std::string_view Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->tokens.size()) return {};
  return impl_->tokens[id];
}

StreamingDecoder::StreamingDecoder(const Tokenizer& tokenizer, SpecialTokens special)
    : tokenizer_(&tokenizer), special_(special) {}

std::string StreamingDecoder::Push(int32_t id) {
  tokenizer_->AppendTokenBytes(id, special_, pending_bytes_);
  // Everything but a character that the next token could still complete is final: lossy decoding never
  // looks past the end of a complete or ill-formed sequence.
  const size_t held = TruncatedUtf8TailLength(pending_bytes_);
  std::string text;
  AppendUtf8Lossy(std::string_view(pending_bytes_).substr(0, pending_bytes_.size() - held), text);
  pending_bytes_.erase(0, pending_bytes_.size() - held);
  return text;
}

std::string StreamingDecoder::Finish() {
  std::string text;
  AppendUtf8Lossy(pending_bytes_, text);
  pending_bytes_.clear();
  return text;
}

}  // namespace strata::model
