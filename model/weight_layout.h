// The tensors a Hugging Face Llama-family checkpoint holds: names and shapes implied by its config.
#ifndef STRATA_MODEL_WEIGHT_LAYOUT_H_
#define STRATA_MODEL_WEIGHT_LAYOUT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "model/checkpoint.h"
#include "model/config.h"

namespace strata::model {

// Names of one decoder layer's tensors (model.layers.<i>.*); bias names are set even when the config
// has no bias (the tensors then do not exist).
struct LayerTensorNames {
  std::string attn_norm, q, k, v, o, q_bias, k_bias, v_bias, o_bias;
  std::string mlp_norm, gate, up, down, gate_bias, up_bias, down_bias;
};
LayerTensorNames LayerNames(int64_t layer);

inline constexpr char kEmbedTokens[] = "model.embed_tokens.weight";
inline constexpr char kFinalNorm[] = "model.norm.weight";
inline constexpr char kLmHead[] = "lm_head.weight";

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every tensor `config` needs, with its shape.
std::vector<TensorSpec> ExpectedTensors(const ModelConfig& config);

// OK when `checkpoint` holds exactly the expected tensors with the expected shapes. Tolerated extras:
// `*.rotary_emb.inv_freq` buffers (older exports) and `lm_head.weight` of a tied model. Errors name
// the tensor, its file and both shapes.
absl::Status CheckTensors(const ModelConfig& config, const Checkpoint& checkpoint);

}  // namespace strata::model

#endif  // STRATA_MODEL_WEIGHT_LAYOUT_H_
