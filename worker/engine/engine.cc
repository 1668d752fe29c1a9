#include "worker/engine/engine.h"

#include <cstring>

#include "common/strings.h"
#include "worker/engine/llama.h"

namespace strata::engine {
absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const model::Model& model, std::unique_ptr<Backend> backend,
                                                       const EngineOptions& options) {
  if (backend == nullptr) return absl::InvalidArgumentError("Engine::Create: no backend");
  STRATA_ASSIGN_OR_RETURN(LlamaModel llama, LlamaModel::Load(model.config, model.checkpoint, *backend));
  return Create(std::move(backend), std::move(llama), options);
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(std::unique_ptr<Backend> backend, LlamaModel model,
                                                       const EngineOptions& options) {
  if (backend == nullptr) return absl::InvalidArgumentError("Engine::Create: no backend");
  if (options.mini_sequence_tokens <= 0) {
    return absl::InvalidArgumentError(
        StrCat("mini_sequence_tokens must be positive, got ", options.mini_sequence_tokens));
  }
  return std::unique_ptr<Engine>(
      new Engine(std::move(backend), std::make_unique<LlamaModel>(std::move(model)), options));
}

Engine::Engine(std::unique_ptr<Backend> backend, std::unique_ptr<LlamaModel> model, const EngineOptions& options)
    : backend_(std::move(backend)), model_(std::move(model)), options_(options) {}

Engine::~Engine() = default;

const model::ModelConfig& Engine::config() const { return model_->config(); }
std::string_view Engine::backend_name() const { return backend_->name(); }
DType Engine::kv_dtype() const { return backend_->activation_dtype(); }

KvShape Engine::KvShapeOf(int64_t capacity_tokens) const {
  const model::ModelConfig& c = config();
  return KvShape{.num_layers = c.num_layers,
                 .num_kv_heads = c.num_kv_heads,
                 .head_dim = c.head_dim,
                 .capacity_tokens = capacity_tokens,
                 .dtype = kv_dtype()};
}

int64_t Engine::KvPayloadBytes(int64_t tokens) const {
  const model::ModelConfig& c = config();
  return 2 * c.num_layers * c.num_kv_heads * tokens * c.head_dim * static_cast<int64_t>(DTypeSize(kv_dtype()));
}

absl::StatusOr<MemoryPlan> Engine::PlanMemory(int64_t capacity_tokens, int64_t prompt_tokens,
                                              const KvPlacement& placement) {
  const model::ModelConfig& c = config();
  if (capacity_tokens <= 0 || capacity_tokens > c.max_position_embeddings) {
    return absl::InvalidArgumentError(StrCat("sequence capacity must be in [1, ", c.max_position_embeddings,
                                             "] (max_position_embeddings), got ", capacity_tokens));
  }
  const KvShape shape = KvShapeOf(capacity_tokens);
  MemoryPlan plan;
  if (placement.plan.has_value()) {
    plan.residency = *placement.plan;
  } else {
    STRATA_ASSIGN_OR_RETURN(plan.residency, ResidencyPlan::FromBudgets(shape, placement.budgets));
  }
  plan.kv = plan.residency.Memory(shape);
  plan.activation_bytes =
      model_->ActivationBytes(std::max<int64_t>(prompt_tokens, 1), 1, options_.mini_sequence_tokens, kv_dtype());
  plan.weight_bytes = model_->WeightBytes();
  if (const std::optional<int64_t> free = backend_->FreeDeviceBytes(); free.has_value()) {
    const int64_t needed = plan.kv.device_bytes + plan.activation_bytes;
    if (needed > *free) {
      return absl::ResourceExhaustedError(StrCat(
          "a sequence of ", capacity_tokens, " tokens needs ", FormatGiB(plan.kv.device_bytes),
          " of GPU memory for KV and ", FormatGiB(plan.activation_bytes), " for activations, but ", FormatGiB(*free),
          " are free: lower --gpu-kv-budget (the rest goes to host memory) or --mini-sequence"));
    }
  }
  return plan;
}

absl::StatusOr<Sequence> Engine::NewSequence(int64_t capacity_tokens, const KvPlacement& placement) {
  STRATA_ASSIGN_OR_RETURN(MemoryPlan plan, PlanMemory(capacity_tokens, 0, placement));
  const KvShape shape = KvShapeOf(capacity_tokens);
  Sequence sequence;
  sequence.capacity_ = capacity_tokens;
  STRATA_ASSIGN_OR_RETURN(sequence.cache_,
                          KvCache::Create(*backend_, shape, std::move(plan.residency), placement.budgets));
  return sequence;
}

absl::StatusOr<std::vector<float>> Engine::Forward(Sequence& sequence, absl::Span<const int32_t> ids,
                                                   absl::Span<const int64_t> logit_rows) {
  STRATA_ASSIGN_OR_RETURN(std::vector<std::vector<float>> logits,
                          ForwardBatch({BatchItem{.sequence = &sequence, .ids = ids, .logit_rows = logit_rows}}));
  return std::move(logits[0]);
}

absl::StatusOr<std::vector<std::vector<float>>> Engine::ForwardBatch(absl::Span<const BatchItem> items) {
  std::vector<LlamaModel::Segment> segments;
  segments.reserve(items.size());
  int64_t rows = 0;
  for (const BatchItem& item : items) {
    if (item.sequence == nullptr || item.sequence->cache_ == nullptr) {
      return absl::InvalidArgumentError("Forward: a batch item without a sequence");
    }
    if (item.ids.empty()) return absl::InvalidArgumentError("Forward: no tokens");
    const int64_t end = item.sequence->length_ + static_cast<int64_t>(item.ids.size());
    if (end > item.sequence->capacity_) {
      return absl::OutOfRangeError(
          StrCat("Forward: ", end, " tokens exceed the sequence capacity of ", item.sequence->capacity_));
    }
    for (const LlamaModel::Segment& other : segments) {
      if (other.cache == item.sequence->cache_.get()) {
        return absl::InvalidArgumentError("Forward: a sequence appears twice in one batch");
      }
    }
    rows += static_cast<int64_t>(item.ids.size());
    segments.push_back(LlamaModel::Segment{.ids = item.ids,
                                           .first_position = item.sequence->length_,
                                           .cache = item.sequence->cache_.get(),
                                           .logit_rows = item.logit_rows});
  }
  STRATA_ASSIGN_OR_RETURN(std::vector<std::vector<float>> logits,
                          model_->Forward(*backend_, segments, options_.mini_sequence_tokens, HiddenOnHost(rows)));
  for (const BatchItem& item : items) item.sequence->length_ += static_cast<int64_t>(item.ids.size());
  return logits;
}

bool Engine::HiddenOnHost(int64_t rows) {
  switch (options_.hidden_states) {
    case EngineOptions::HiddenStates::kDevice:
      return false;
    case EngineOptions::HiddenStates::kHost:
      return true;
    case EngineOptions::HiddenStates::kAuto:
      break;
  }
  const std::optional<int64_t> free = backend_->FreeDeviceBytes();
  if (!free.has_value() || rows == 1) return false;
  // The whole pass's activations (hidden rows included) must fit what is free.
  return model_->ActivationBytes(rows, 1, options_.mini_sequence_tokens, kv_dtype()) > *free;
}

// Payload layout (ARCHITECTURE.md): [layer][K|V][kv_head][token][head_dim].
absl::Status Engine::ExportKv(const Sequence& sequence, int64_t first_token, int64_t tokens,
                              absl::Span<std::byte> payload) {
  if (first_token < 0 || tokens < 0 || first_token + tokens > sequence.length_) {
    return absl::OutOfRangeError(StrCat("ExportKv: tokens [", first_token, ", ", first_token + tokens, ") of a ",
                                        sequence.length_, "-token sequence"));
  }
  if (static_cast<int64_t>(payload.size()) != KvPayloadBytes(tokens)) {
    return absl::InvalidArgumentError(StrCat("ExportKv: a payload of ", payload.size(), " bytes for ", tokens,
                                             " tokens, which take ", KvPayloadBytes(tokens)));
  }
  const model::ModelConfig& c = config();
  const int64_t head_bytes = tokens * c.head_dim * static_cast<int64_t>(DTypeSize(kv_dtype()));
  std::byte* out = payload.data();
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
      for (int64_t head = 0; head < c.num_kv_heads; ++head) {
        STRATA_RETURN_IF_ERROR(sequence.cache_->ReadRows(layer, head, part, first_token, tokens, out));
        out += head_bytes;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Engine::AppendKv(Sequence& sequence, absl::Span<const std::byte> payload, int64_t tokens) {
  if (tokens < 0 || sequence.length_ + tokens > sequence.capacity_) {
    return absl::OutOfRangeError(StrCat("AppendKv: ", tokens, " tokens after ", sequence.length_,
                                        " exceed the sequence capacity of ", sequence.capacity_));
  }
  if (static_cast<int64_t>(payload.size()) != KvPayloadBytes(tokens)) {
    return absl::InvalidArgumentError(StrCat("AppendKv: a payload of ", payload.size(), " bytes for ", tokens,
                                             " tokens, which take ", KvPayloadBytes(tokens)));
  }
  const model::ModelConfig& c = config();
  const int64_t head_bytes = tokens * c.head_dim * static_cast<int64_t>(DTypeSize(kv_dtype()));
  const std::byte* in = payload.data();
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
      for (int64_t head = 0; head < c.num_kv_heads; ++head) {
        STRATA_RETURN_IF_ERROR(sequence.cache_->WriteRows(layer, head, part, sequence.length_, tokens, in));
        in += head_bytes;
      }
    }
  }
  sequence.length_ += tokens;
  return absl::OkStatus();
}

}  // namespace strata::engine
