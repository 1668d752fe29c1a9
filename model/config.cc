#include "model/config.h"

#include <charconv>
#include <optional>

#include "absl/strings/str_join.h"
#include "common/file.h"
#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"
#include "model/json_errors.h"

namespace strata::model {
namespace {

using nlohmann::json;

constexpr int64_t kMaxSize = int64_t{1} << 24;  // 16M: above any real vocabulary, width or context
constexpr int64_t kMaxLayers = 1024;

// Reads typed fields of one JSON object, turning every type or range problem into an error that
// names the file and the key.
class ConfigReader {
 public:
  ConfigReader(const json& object, std::string_view source, std::string prefix = "")
      : object_(object), source_(source), prefix_(std::move(prefix)) {}

  bool Has(std::string_view key) const {
    auto it = object_.find(key);
    return it != object_.end() && !it->is_null();
  }

  absl::StatusOr<int64_t> Int(std::string_view key, std::optional<int64_t> fallback = std::nullopt) const {
    if (!Has(key)) return Missing(key, fallback);
    const json& value = object_.at(std::string(key));
    if (!value.is_number_integer()) return WrongType(key, "an integer", value);
    return value.get<int64_t>();
  }

  // In [1, kMaxSize]: sizes past it are corrupt files, and bounding them keeps every product of two
  // sizes (vocab x hidden, heads x head_dim) far from overflow.
  absl::StatusOr<int64_t> PositiveInt(std::string_view key, std::optional<int64_t> fallback = std::nullopt) const {
    STRATA_ASSIGN_OR_RETURN(int64_t value, Int(key, fallback));
    if (value <= 0 || value > kMaxSize) {
      return absl::InvalidArgumentError(
          StrCat(source_, ": '", prefix_, key, "' must be in [1, ", kMaxSize, "], got ", value));
    }
    return value;
  }

  absl::StatusOr<double> Number(std::string_view key, std::optional<double> fallback = std::nullopt) const {
    if (!Has(key)) return Missing(key, fallback);
    const json& value = object_.at(std::string(key));
    if (!value.is_number()) return WrongType(key, "a number", value);
    return value.get<double>();
  }

  absl::StatusOr<bool> Bool(std::string_view key, bool fallback) const {
    if (!Has(key)) return fallback;
    const json& value = object_.at(std::string(key));
    if (!value.is_boolean()) return WrongType(key, "true or false", value);
    return value.get<bool>();
  }

  absl::StatusOr<std::string> String(std::string_view key, std::optional<std::string> fallback) const {
    if (!Has(key)) return Missing(key, fallback);
    const json& value = object_.at(std::string(key));
    if (!value.is_string()) return WrongType(key, "a string", value);
    return value.get<std::string>();
  }

  // An integer or a list of integers (`eos_token_id` is either); empty when absent.
  absl::StatusOr<std::vector<int64_t>> IntList(std::string_view key) const {
    std::vector<int64_t> out;
    if (!Has(key)) return out;
    const json& value = object_.at(std::string(key));
    if (value.is_number_integer()) {
      out.push_back(value.get<int64_t>());
      return out;
    }
    if (!value.is_array()) return WrongType(key, "an integer or a list of integers", value);
    for (const json& item : value) {
      if (!item.is_number_integer()) return WrongType(key, "an integer or a list of integers", value);
      out.push_back(item.get<int64_t>());
    }
    return out;
  }

 private:
  template <typename T>
  absl::StatusOr<T> Missing(std::string_view key, const std::optional<T>& fallback) const {
    if (fallback.has_value()) return *fallback;
    return absl::InvalidArgumentError(StrCat(source_, ": required key '", prefix_, key, "' is missing"));
  }

  absl::Status WrongType(std::string_view key, std::string_view expected, const json& value) const {
    return absl::InvalidArgumentError(
        StrCat(source_, ": '", prefix_, key, "' must be ", expected, ", got ", value.dump()));
  }

  const json& object_;
  std::string_view source_;
  std::string prefix_;
};

absl::StatusOr<Architecture> ParseArchitecture(const json& root, std::string_view source) {
  static constexpr std::pair<std::string_view, Architecture> kArchitectures[] = {
      {"LlamaForCausalLM", Architecture::kLlama},
      {"Qwen2ForCausalLM", Architecture::kQwen2},
      {"MistralForCausalLM", Architecture::kMistral},
  };
  static constexpr std::pair<std::string_view, Architecture> kModelTypes[] = {
      {"llama", Architecture::kLlama}, {"qwen2", Architecture::kQwen2}, {"mistral", Architecture::kMistral}};
  std::string named;
  if (auto it = root.find("architectures"); it != root.end() && it->is_array() && !it->empty()) {
    if (!(*it)[0].is_string()) {
      return absl::InvalidArgumentError(StrCat(source, ": 'architectures' must be a list of strings"));
    }
    named = (*it)[0].get<std::string>();
    for (const auto& [name, arch] : kArchitectures) {
      if (named == name) return arch;
    }
  } else if (auto type = root.find("model_type"); type != root.end() && type->is_string()) {
    named = type->get<std::string>();
    for (const auto& [name, arch] : kModelTypes) {
      if (named == name) return arch;
    }
  } else {
    return absl::InvalidArgumentError(
        StrCat(source, ": neither 'architectures' nor 'model_type' says what the model is"));
  }
  return absl::InvalidArgumentError(
      StrCat(source, ": architecture '", named,
             "' is not supported (supported: LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM)"));
}

// RoPE settings live in `rope_parameters` (transformers 5.x) or in top-level `rope_theta` plus an
// optional `rope_scaling` object (4.x, as published Llama-3.1 and Qwen2.5 checkpoints write them).
absl::StatusOr<RopeConfig> ParseRope(const json& root, std::string_view source) {
  RopeConfig rope;
  const json* params = nullptr;
  std::string prefix;
  if (auto it = root.find("rope_parameters"); it != root.end() && !it->is_null()) {
    if (!it->is_object()) {
      return absl::InvalidArgumentError(StrCat(source, ": 'rope_parameters' must be an object"));
    }
    params = &*it;
    prefix = "rope_parameters.";
  }
  ConfigReader top(root, source);
  STRATA_ASSIGN_OR_RETURN(rope.theta, top.Number("rope_theta", 10000.0));
  if (params != nullptr) {
    STRATA_ASSIGN_OR_RETURN(rope.theta, ConfigReader(*params, source, prefix).Number("rope_theta", rope.theta));
  } else if (auto it = root.find("rope_scaling"); it != root.end() && !it->is_null()) {
    if (!it->is_object()) {
      return absl::InvalidArgumentError(StrCat(source, ": 'rope_scaling' must be an object or null"));
    }
    params = &*it;
    prefix = "rope_scaling.";
  }
  if (!(rope.theta > 0)) {
    return absl::InvalidArgumentError(StrCat(source, ": rope_theta must be positive, got ", rope.theta));
  }
  if (params == nullptr) return rope;

  ConfigReader reader(*params, source, prefix);
  std::string type = "default";
  if (reader.Has("rope_type")) {
    STRATA_ASSIGN_OR_RETURN(type, reader.String("rope_type", std::nullopt));
  } else if (reader.Has("type")) {
    STRATA_ASSIGN_OR_RETURN(type, reader.String("type", std::nullopt));
  }
  if (type == "default") return rope;
  if (type != "llama3") {
    return absl::InvalidArgumentError(
        StrCat(source, ": rope type '", type, "' is not supported (supported: default, llama3)"));
  }
  rope.type = RopeType::kLlama3;
  STRATA_ASSIGN_OR_RETURN(rope.factor, reader.Number("factor"));
  STRATA_ASSIGN_OR_RETURN(rope.low_freq_factor, reader.Number("low_freq_factor"));
  STRATA_ASSIGN_OR_RETURN(rope.high_freq_factor, reader.Number("high_freq_factor"));
  STRATA_ASSIGN_OR_RETURN(rope.original_max_position_embeddings,
                          reader.PositiveInt("original_max_position_embeddings"));
  if (!(rope.factor > 0) || !(rope.low_freq_factor > 0) || !(rope.high_freq_factor > rope.low_freq_factor)) {
    return absl::InvalidArgumentError(
        StrCat(source, ": llama3 rope scaling needs factor > 0 and high_freq_factor > low_freq_factor > 0, got factor ",
               rope.factor, ", low_freq_factor ", rope.low_freq_factor, ", high_freq_factor ", rope.high_freq_factor));
  }
  return rope;
}

// Per-layer sliding windows. transformers 5.x lists `layer_types`; 4.x derives them: Mistral applies
// `sliding_window` to every layer, Qwen2 only with `use_sliding_window` and from `max_window_layers` on.
absl::StatusOr<std::vector<int64_t>> ParseLayerWindows(const json& root, const ConfigReader& reader, Architecture arch,
                                                       int64_t num_layers, std::string_view source) {
  std::vector<int64_t> windows(num_layers, 0);
  if (arch == Architecture::kLlama) return windows;
  int64_t sliding_window = 0;
  if (reader.Has("sliding_window")) {
    STRATA_ASSIGN_OR_RETURN(sliding_window, reader.PositiveInt("sliding_window"));
  }
  if (auto it = root.find("layer_types"); it != root.end() && !it->is_null()) {
    if (!it->is_array() || static_cast<int64_t>(it->size()) != num_layers) {
      return absl::InvalidArgumentError(
          StrCat(source, ": 'layer_types' must list one type for each of the ", num_layers, " layers"));
    }
    for (int64_t i = 0; i < num_layers; ++i) {
      const json& type = (*it)[i];
      if (type == "full_attention") continue;
      if (type == "sliding_attention" && sliding_window > 0) {
        windows[i] = sliding_window;
        continue;
      }
      return absl::InvalidArgumentError(
          StrCat(source, ": layer_types[", i, "] is ", type.dump(),
                 type == "sliding_attention" ? " but 'sliding_window' is not set" : ", which is not supported"));
    }
    return windows;
  }
  if (sliding_window == 0) return windows;
  int64_t first_sliding_layer = 0;
  if (arch == Architecture::kQwen2) {
    STRATA_ASSIGN_OR_RETURN(bool use_sliding, reader.Bool("use_sliding_window", false));
    if (!use_sliding) return windows;
    STRATA_ASSIGN_OR_RETURN(first_sliding_layer, reader.Int("max_window_layers", num_layers));
    if (first_sliding_layer < 0) {
      return absl::InvalidArgumentError(
          StrCat(source, ": 'max_window_layers' must be >= 0, got ", first_sliding_layer));
    }
    first_sliding_layer = std::min(first_sliding_layer, num_layers);
  }
  for (int64_t i = first_sliding_layer; i < num_layers; ++i) windows[i] = sliding_window;
  return windows;
}

absl::StatusOr<ModelConfig> ParseRoot(const json& root, std::string_view source) {
  if (!root.is_object()) return absl::InvalidArgumentError(StrCat(source, ": must hold a JSON object"));
  ModelConfig config;
  ConfigReader reader(root, source);
  STRATA_ASSIGN_OR_RETURN(config.architecture, ParseArchitecture(root, source));
  STRATA_ASSIGN_OR_RETURN(config.vocab_size, reader.PositiveInt("vocab_size"));
  STRATA_ASSIGN_OR_RETURN(config.hidden_size, reader.PositiveInt("hidden_size"));
  STRATA_ASSIGN_OR_RETURN(config.intermediate_size, reader.PositiveInt("intermediate_size"));
  STRATA_ASSIGN_OR_RETURN(config.num_layers, reader.PositiveInt("num_hidden_layers"));
  if (config.num_layers > kMaxLayers) {
    return absl::InvalidArgumentError(
        StrCat(source, ": 'num_hidden_layers' must be at most ", kMaxLayers, ", got ", config.num_layers));
  }
  STRATA_ASSIGN_OR_RETURN(config.num_heads, reader.PositiveInt("num_attention_heads"));
  STRATA_ASSIGN_OR_RETURN(config.num_kv_heads, reader.PositiveInt("num_key_value_heads", config.num_heads));
  if (config.hidden_size % config.num_heads != 0 && !reader.Has("head_dim")) {
    return absl::InvalidArgumentError(StrCat(source, ": hidden_size ", config.hidden_size,
                                             " is not a multiple of num_attention_heads ", config.num_heads,
                                             " and 'head_dim' is not given"));
  }
  STRATA_ASSIGN_OR_RETURN(config.head_dim, reader.PositiveInt("head_dim", config.hidden_size / config.num_heads));
  if (config.num_heads % config.num_kv_heads != 0) {
    return absl::InvalidArgumentError(StrCat(source, ": num_attention_heads ", config.num_heads,
                                             " is not a multiple of num_key_value_heads ", config.num_kv_heads));
  }
  if (config.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(StrCat(source, ": head_dim must be even for RoPE, got ", config.head_dim));
  }
  STRATA_ASSIGN_OR_RETURN(config.rms_norm_eps, reader.Number("rms_norm_eps", 1e-6));
  STRATA_ASSIGN_OR_RETURN(std::string act, reader.String("hidden_act", std::string("silu")));
  if (act != "silu") {
    return absl::InvalidArgumentError(StrCat(source, ": hidden_act '", act, "' is not supported (supported: silu)"));
  }
  STRATA_ASSIGN_OR_RETURN(double partial_rotary, reader.Number("partial_rotary_factor", 1.0));
  if (partial_rotary != 1.0) {
    return absl::InvalidArgumentError(
        StrCat(source, ": partial_rotary_factor ", partial_rotary, " is not supported (only 1.0)"));
  }
  STRATA_ASSIGN_OR_RETURN(config.rope, ParseRope(root, source));
  STRATA_ASSIGN_OR_RETURN(config.tie_word_embeddings, reader.Bool("tie_word_embeddings", false));
  switch (config.architecture) {
    case Architecture::kQwen2:
      config.qkv_bias = true;
      break;
    case Architecture::kLlama: {
      STRATA_ASSIGN_OR_RETURN(bool attention_bias, reader.Bool("attention_bias", false));
      config.qkv_bias = config.o_bias = attention_bias;
      STRATA_ASSIGN_OR_RETURN(config.mlp_bias, reader.Bool("mlp_bias", false));
      break;
    }
    case Architecture::kMistral:
      break;
  }
  STRATA_ASSIGN_OR_RETURN(config.layer_window,
                          ParseLayerWindows(root, reader, config.architecture, config.num_layers, source));
  STRATA_ASSIGN_OR_RETURN(config.max_position_embeddings, reader.PositiveInt("max_position_embeddings", 4096));
  STRATA_ASSIGN_OR_RETURN(config.bos_token_id, reader.Int("bos_token_id", -1));
  STRATA_ASSIGN_OR_RETURN(config.eos_token_ids, reader.IntList("eos_token_id"));
  for (int64_t id : config.eos_token_ids) {
    if (id < 0 || id >= config.vocab_size) {
      return absl::InvalidArgumentError(
          StrCat(source, ": eos_token_id ", id, " is outside the vocabulary [0, ", config.vocab_size, ")"));
    }
  }
  if (config.bos_token_id >= config.vocab_size || config.bos_token_id < -1) {
    return absl::InvalidArgumentError(StrCat(source, ": bos_token_id ", config.bos_token_id,
                                             " is outside the vocabulary [0, ", config.vocab_size, ")"));
  }
  return config;
}

// Shortest text that reads back as exactly `value`: StrCat keeps only 6 digits, and two configs that
// differ in the 7th digit of rope_theta must not share a fingerprint.
std::string ExactDouble(double value) {
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

}  // namespace

std::string_view ArchitectureName(Architecture arch) {
  switch (arch) {
    case Architecture::kLlama:
      return "LlamaForCausalLM";
    case Architecture::kQwen2:
      return "Qwen2ForCausalLM";
    case Architecture::kMistral:
      return "MistralForCausalLM";
  }
  STRATA_CHECK(false);
  return "";
}

std::string ModelConfig::Canonical() const {
  return StrCat("arch=", ArchitectureName(architecture), ";vocab=", vocab_size, ";hidden=", hidden_size,
                ";intermediate=", intermediate_size, ";layers=", num_layers, ";heads=", num_heads,
                ";kv_heads=", num_kv_heads, ";head_dim=", head_dim, ";rms_eps=", ExactDouble(rms_norm_eps),
                ";rope=", rope.type == RopeType::kLlama3 ? "llama3" : "default",
                ";rope_theta=", ExactDouble(rope.theta), ";rope_factor=", ExactDouble(rope.factor),
                ";rope_low=", ExactDouble(rope.low_freq_factor), ";rope_high=", ExactDouble(rope.high_freq_factor),
                ";rope_original_max=", rope.original_max_position_embeddings, ";tied=", tie_word_embeddings,
                ";qkv_bias=", qkv_bias, ";o_bias=", o_bias, ";mlp_bias=", mlp_bias,
                ";windows=", absl::StrJoin(layer_window, ","));
}

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view text, std::string_view source) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(StrCat(source, ": not valid JSON: ", DescribeJsonError(e)));
  }
  absl::StatusOr<ModelConfig> config = ParseRoot(root, source);
  if (!config.ok()) return absl::Status(config.status().code(), OneLine(config.status().message()));
  return config;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::filesystem::path& path) {
  STRATA_ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  return ParseModelConfig(text, path.string());
}

}  // namespace strata::model
