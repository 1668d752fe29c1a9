// ModelConfig: the parts of a Hugging Face `config.json` that define a Llama-family forward pass.
#ifndef STRATA_MODEL_CONFIG_H_
#define STRATA_MODEL_CONFIG_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::model {

enum class Architecture { kLlama, kQwen2, kMistral };
std::string_view ArchitectureName(Architecture arch);  // "LlamaForCausalLM", ...

enum class RopeType { kDefault, kLlama3 };

struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  // kLlama3 only (transformers' `_compute_llama3_parameters`).
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // == num_heads when the config omits it
  int64_t head_dim = 0;      // hidden_size / num_heads when the config omits it
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2 always; Llama when `attention_bias`
  bool o_bias = false;    // Llama when `attention_bias`
  bool mlp_bias = false;  // Llama when `mlp_bias`
  // Attention window of each layer in tokens; 0 = full causal attention. A query at position p sees
  // keys at positions (p - window, p].
  std::vector<int64_t> layer_window;
  int64_t max_position_embeddings = 0;
  int64_t bos_token_id = -1;  // -1 when absent
  std::vector<int64_t> eos_token_ids;

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  // K and V bytes per token over all layers, for elements of `element_bytes`.
  int64_t KvBytesPerToken(int64_t element_bytes) const { return 2 * num_layers * kv_dim() * element_bytes; }
  // Every field that changes the forward pass, as stable text: part of the model fingerprint.
  std::string Canonical() const;
};

// Parses `json` (the text of config.json; `source` names it in errors). Accepts RoPE settings both as
// top-level `rope_theta`/`rope_scaling` (transformers 4.x) and as `rope_parameters` (5.x).
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json, std::string_view source);
// Reads and parses `path`.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::filesystem::path& path);

}  // namespace strata::model

#endif  // STRATA_MODEL_CONFIG_H_
