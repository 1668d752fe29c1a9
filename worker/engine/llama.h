// The Llama-family decoder (Llama 2/3, Qwen2, Mistral) as a graph of backend ops: its weights on a
// backend and the layer-by-layer, mini-sequence forward pass over them. Private to the engine.
#ifndef STRATA_WORKER_ENGINE_LLAMA_H_
#define STRATA_WORKER_ENGINE_LLAMA_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/engine/backend.h"
#include "worker/engine/kv_cache.h"
#include "model/checkpoint.h"
#include "model/config.h"

namespace strata::engine {

struct LlamaLayerWeights {
  Tensor attn_norm, q, k, v, o, q_bias, k_bias, v_bias, o_bias;  // biases empty when absent
  Tensor mlp_norm, gate, up, down, gate_bias, up_bias, down_bias;
};

class LlamaModel {
 public:
  // Binds every tensor of `checkpoint` on `backend`.
  // REQUIRES: model::CheckTensors(config, checkpoint) is OK (model::OpenModel checks it).
  static absl::StatusOr<LlamaModel> Load(const model::ModelConfig& config, const model::Checkpoint& checkpoint,
                                         Backend& backend);

  // A model over weights already on `backend` (benchmarks make random ones): `layers` holds
  // config.num_layers entries shaped as Load binds them; lm_head may be `embed` (tied).
  static absl::StatusOr<LlamaModel> FromWeights(const model::ModelConfig& config, Tensor embed, Tensor final_norm,
                                                Tensor lm_head, std::vector<LlamaLayerWeights> layers,
                                                Backend& backend);

  // One sequence's tokens in a forward pass: `ids` at positions first_position.. of `kv`.
  struct Segment {
    absl::Span<const int32_t> ids;
    int64_t first_position = 0;
    SequenceKv* kv = nullptr;
    absl::Span<const int64_t> logit_rows;  // indices into ids
  };

  // Runs every segment's tokens through every layer (layer by layer: all tokens through layer l, then
  // l + 1, so a layer's KV is needed on the device only while that layer runs), writing their K/V into
  // each segment's cache. The projections, the MLP and the LM head see at most `mini_sequence_tokens`
  // rows at a time, rows of several segments together; attention runs per segment over its own cache.
  // Only the rows of `logit_rows` reach the LM head. Returns each segment's logits, row-major
  // [logit_rows.size(), vocab]. On error the caches' rows past each first_position are unspecified.
  // `hidden_on_host`: the residual stream of all rows lives in pinned host memory and each mini-sequence's
  // rows are copied in and out (for prompts whose hidden states do not fit the device).
  absl::StatusOr<std::vector<std::vector<float>>> Forward(Backend& backend, absl::Span<const Segment> segments,
                                                          int64_t mini_sequence_tokens, bool hidden_on_host = false) const;

  // Bytes of activations a forward pass of `tokens` new tokens allocates on the backend.
  int64_t ActivationBytes(int64_t tokens, int64_t logit_rows, int64_t mini_sequence_tokens, DType dtype) const;

  // Bytes of the weights on the backend.
  int64_t WeightBytes() const;

  const model::ModelConfig& config() const { return config_; }

 private:
  model::ModelConfig config_;
  Tensor embed_, final_norm_, lm_head_, rope_inv_freq_;
  std::vector<LlamaLayerWeights> layers_;
};

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_LLAMA_H_
