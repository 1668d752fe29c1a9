#include "model/weight_layout.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "common/strings.h"
#include "model/json_errors.h"

namespace strata::model {

LayerTensorNames LayerNames(int64_t layer) {
  const std::string prefix = StrCat("model.layers.", layer, ".");
  const std::string attn = prefix + "self_attn.";
  const std::string mlp = prefix + "mlp.";
  return LayerTensorNames{
      .attn_norm = prefix + "input_layernorm.weight",
      .q = attn + "q_proj.weight",
      .k = attn + "k_proj.weight",
      .v = attn + "v_proj.weight",
      .o = attn + "o_proj.weight",
      .q_bias = attn + "q_proj.bias",
      .k_bias = attn + "k_proj.bias",
      .v_bias = attn + "v_proj.bias",
      .o_bias = attn + "o_proj.bias",
      .mlp_norm = prefix + "post_attention_layernorm.weight",
      .gate = mlp + "gate_proj.weight",
      .up = mlp + "up_proj.weight",
      .down = mlp + "down_proj.weight",
      .gate_bias = mlp + "gate_proj.bias",
      .up_bias = mlp + "up_proj.bias",
      .down_bias = mlp + "down_proj.bias",
  };
}

std::vector<TensorSpec> ExpectedTensors(const ModelConfig& c) {
  std::vector<TensorSpec> specs;
  specs.push_back({kEmbedTokens, {c.vocab_size, c.hidden_size}});
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    const LayerTensorNames n = LayerNames(layer);
    specs.push_back({n.attn_norm, {c.hidden_size}});
    specs.push_back({n.q, {c.q_dim(), c.hidden_size}});
    specs.push_back({n.k, {c.kv_dim(), c.hidden_size}});
    specs.push_back({n.v, {c.kv_dim(), c.hidden_size}});
    specs.push_back({n.o, {c.hidden_size, c.q_dim()}});
    if (c.qkv_bias) {
      specs.push_back({n.q_bias, {c.q_dim()}});
      specs.push_back({n.k_bias, {c.kv_dim()}});
      specs.push_back({n.v_bias, {c.kv_dim()}});
    }
    if (c.o_bias) specs.push_back({n.o_bias, {c.hidden_size}});
    specs.push_back({n.mlp_norm, {c.hidden_size}});
    specs.push_back({n.gate, {c.intermediate_size, c.hidden_size}});
    specs.push_back({n.up, {c.intermediate_size, c.hidden_size}});
    specs.push_back({n.down, {c.hidden_size, c.intermediate_size}});
    if (c.mlp_bias) {
      specs.push_back({n.gate_bias, {c.intermediate_size}});
      specs.push_back({n.up_bias, {c.intermediate_size}});
      specs.push_back({n.down_bias, {c.hidden_size}});
    }
  }
  specs.push_back({kFinalNorm, {c.hidden_size}});
  if (!c.tie_word_embeddings) specs.push_back({kLmHead, {c.vocab_size, c.hidden_size}});
  return specs;
}

absl::Status CheckTensors(const ModelConfig& config, const Checkpoint& checkpoint) {
  const std::vector<TensorSpec> specs = ExpectedTensors(config);
  absl::flat_hash_set<std::string_view> expected;
  for (const TensorSpec& spec : specs) {
    expected.insert(spec.name);
    const TensorInfo* info = checkpoint.Find(spec.name);
    if (info == nullptr) {
      return absl::InvalidArgumentError(StrCat("tensor '", spec.name, "' is missing from the checkpoint (",
                                               ArchitectureName(config.architecture), " with ", config.num_layers,
                                               " layers needs it)"));
    }
    if (info->shape != spec.shape) {
      return absl::InvalidArgumentError(StrCat(info->file, ": tensor '", spec.name, "' has shape [",
                                               absl::StrJoin(info->shape, ", "), "] but config.json implies [",
                                               absl::StrJoin(spec.shape, ", "), "]"));
    }
  }
  for (const TensorInfo& info : checkpoint.tensors()) {
    if (expected.contains(info.name) || absl::EndsWith(info.name, ".rotary_emb.inv_freq") ||
        (config.tie_word_embeddings && info.name == kLmHead)) {
      continue;
    }
    return absl::InvalidArgumentError(StrCat(info.file, ": unexpected tensor ", Quoted(info.name), " (not part of ",
                                             ArchitectureName(config.architecture), " with ", config.num_layers,
                                             " layers)"));
  }
  return absl::OkStatus();
}

}  // namespace strata::model
