#include "worker/engine/engine.h"

#include "common/strings.h"
#include "worker/engine/llama.h"

namespace strata::engine {

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const model::Model& model, std::unique_ptr<Backend> backend,
                                                       const EngineOptions& options) {
  if (backend == nullptr) return absl::InvalidArgumentError("Engine::Create: no backend");
  if (options.mini_sequence_tokens <= 0) {
    return absl::InvalidArgumentError(
        StrCat("mini_sequence_tokens must be positive, got ", options.mini_sequence_tokens));
  }
  STRATA_ASSIGN_OR_RETURN(LlamaModel llama, LlamaModel::Load(model.config, model.checkpoint, *backend));
  return std::unique_ptr<Engine>(
      new Engine(std::move(backend), std::make_unique<LlamaModel>(std::move(llama)), options));
}

Engine::Engine(std::unique_ptr<Backend> backend, std::unique_ptr<LlamaModel> model, const EngineOptions& options)
    : backend_(std::move(backend)), model_(std::move(model)), options_(options) {}

Engine::~Engine() = default;

const model::ModelConfig& Engine::config() const { return model_->config(); }

absl::StatusOr<Sequence> Engine::NewSequence(int64_t capacity_tokens) {
  const model::ModelConfig& c = config();
  if (capacity_tokens <= 0 || capacity_tokens > c.max_position_embeddings) {
    return absl::InvalidArgumentError(StrCat("sequence capacity must be in [1, ", c.max_position_embeddings,
                                             "] (max_position_embeddings), got ", capacity_tokens));
  }
  Sequence sequence;
  sequence.capacity_ = capacity_tokens;
  const DType dtype = backend_->activation_dtype();
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    KvLayer kv{.num_kv_heads = c.num_kv_heads, .capacity_tokens = capacity_tokens};
    STRATA_ASSIGN_OR_RETURN(kv.k, backend_->Allocate(dtype, c.num_kv_heads * capacity_tokens, c.head_dim));
    STRATA_ASSIGN_OR_RETURN(kv.v, backend_->Allocate(dtype, c.num_kv_heads * capacity_tokens, c.head_dim));
    sequence.layers_.push_back(std::move(kv));
  }
  return sequence;
}

absl::StatusOr<std::vector<float>> Engine::Forward(Sequence& sequence, absl::Span<const int32_t> ids,
                                                   absl::Span<const int64_t> logit_rows) {
  if (ids.empty()) return absl::InvalidArgumentError("Forward: no tokens");
  const int64_t end = sequence.length_ + static_cast<int64_t>(ids.size());
  if (end > sequence.capacity_) {
    return absl::OutOfRangeError(
        StrCat("Forward: ", end, " tokens exceed the sequence capacity of ", sequence.capacity_));
  }
  STRATA_ASSIGN_OR_RETURN(std::vector<float> logits,
                          model_->Forward(*backend_, ids, sequence.length_, absl::MakeSpan(sequence.layers_), logit_rows,
                                         options_.mini_sequence_tokens));
  sequence.length_ = end;
  return logits;
}

}  // namespace strata::engine
