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
  if (options.kv_block_tokens <= 0) {
    return absl::InvalidArgumentError(StrCat("kv_block_tokens must be positive, got ", options.kv_block_tokens));
  }
  auto engine = std::unique_ptr<Engine>(
      new Engine(std::move(backend), std::make_unique<LlamaModel>(std::move(model)), options));
  const model::ModelConfig& c = engine->config();
  const KvPoolShape shape{.num_layers = c.num_layers,
                          .num_kv_heads = c.num_kv_heads,
                          .head_dim = c.head_dim,
                          .dtype = engine->kv_dtype(),
                          .block_tokens = options.kv_block_tokens};
  int64_t blocks = options.kv_pool_blocks;
  if (blocks == 0 && options.kv_pool_bytes > 0) {
    blocks = options.kv_pool_bytes / shape.BlockBytes();
    if (blocks == 0) {
      return absl::InvalidArgumentError(StrCat("a KV pool of ", options.kv_pool_bytes, " bytes holds no block of ",
                                               shape.BlockBytes(), " bytes"));
    }
  } else if (blocks == 0 && options.kv_pool_memory_fraction > 0) {
    const std::optional<int64_t> free = engine->backend_->FreeDeviceBytes();
    if (!free.has_value()) {
      return absl::InvalidArgumentError("a KV pool by memory fraction needs a backend with device memory: give its blocks");
    }
    const int64_t reserve = engine->model_->ActivationBytes(options.kv_pool_reserve_tokens, 1,
                                                            options.mini_sequence_tokens, engine->kv_dtype());
    blocks = static_cast<int64_t>(options.kv_pool_memory_fraction * static_cast<double>(*free - reserve)) /
             shape.BlockBytes();
    if (blocks <= 0) {
      return absl::ResourceExhaustedError(StrCat("no GPU memory for a KV pool: ", FormatGiB(*free),
                                                 " free after the weights, ", FormatGiB(reserve),
                                                 " set aside for activations"));
    }
  }
  if (blocks > 0) {
    STRATA_ASSIGN_OR_RETURN(engine->pool_, KvPool::Create(*engine->backend_, shape, blocks));
  }
  return engine;
}

absl::Span<const int32_t> Sequence::blocks() const {
  return paged_ != nullptr ? paged_->blocks() : absl::Span<const int32_t>();
}

KvTransferStats Sequence::transfer_stats() const { return cache_ != nullptr ? cache_->stats() : KvTransferStats(); }

absl::Status Sequence::SetSparseDecodeBudget(int64_t budget_tokens) {
  if (cache_ == nullptr) return absl::FailedPreconditionError("sparse decode: a paged sequence has no chunk bounds");
  return cache_->SetSparseBudget(budget_tokens);
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
  STRATA_RETURN_IF_ERROR(placement.sparse.Validate());
  plan.kv.device_bytes += placement.sparse.DeviceBytes(shape, plan.residency);
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
  if (pool_ != nullptr && placement.IsDefault()) return NewSequence(capacity_tokens, absl::Span<const int32_t>());
  STRATA_ASSIGN_OR_RETURN(MemoryPlan plan, PlanMemory(capacity_tokens, 0, placement));
  const KvShape shape = KvShapeOf(capacity_tokens);
  Sequence sequence;
  sequence.capacity_ = capacity_tokens;
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache,
                          KvCache::Create(*backend_, shape, std::move(plan.residency), placement.budgets,
                                                          placement.sparse));
  sequence.cache_ = cache.get();
  sequence.kv_ = std::move(cache);
  return sequence;
}

absl::StatusOr<Sequence> Engine::NewSequence(int64_t capacity_tokens, absl::Span<const int32_t> prefix) {
  if (pool_ == nullptr) return absl::FailedPreconditionError("NewSequence: this engine has no KV pool");
  const model::ModelConfig& c = config();
  const int64_t bt = pool_->block_tokens();
  const int64_t prefix_tokens = static_cast<int64_t>(prefix.size()) * bt;
  if (capacity_tokens <= 0 || capacity_tokens > c.max_position_embeddings || prefix_tokens > capacity_tokens) {
    return absl::InvalidArgumentError(StrCat("sequence capacity must be in [", std::max<int64_t>(1, prefix_tokens),
                                             ", ", c.max_position_embeddings, "] (max_position_embeddings and the ",
                                             prefix.size(), "-block prefix), got ", capacity_tokens));
  }
  const int64_t needed = (capacity_tokens + bt - 1) / bt;
  // The prefix is held before anything is allocated: the pool's reclaimer may drop cached blocks to
  // make room, and must not drop these.
  pool_->Ref(prefix);
  absl::StatusOr<std::vector<int32_t>> fresh = pool_->Allocate(needed - static_cast<int64_t>(prefix.size()));
  if (!fresh.ok()) {
    pool_->Unref(prefix);
    return fresh.status();
  }
  std::vector<int32_t> blocks(prefix.begin(), prefix.end());
  blocks.insert(blocks.end(), fresh->begin(), fresh->end());
  Sequence sequence;
  sequence.capacity_ = capacity_tokens;
  sequence.length_ = prefix_tokens;
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<PagedKv> paged, PagedKv::Create(*pool_, *backend_, std::move(blocks)));
  sequence.paged_ = paged.get();
  sequence.kv_ = std::move(paged);
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
    if (item.sequence == nullptr || item.sequence->kv_ == nullptr) {
      return absl::InvalidArgumentError("Forward: a batch item without a sequence");
    }
    if (item.ids.empty()) return absl::InvalidArgumentError("Forward: no tokens");
    const int64_t end = item.sequence->length_ + static_cast<int64_t>(item.ids.size());
    if (end > item.sequence->capacity_) {
      return absl::OutOfRangeError(
          StrCat("Forward: ", end, " tokens exceed the sequence capacity of ", item.sequence->capacity_));
    }
    for (const LlamaModel::Segment& other : segments) {
      if (other.kv == item.sequence->kv_.get()) {
        return absl::InvalidArgumentError("Forward: a sequence appears twice in one batch");
      }
    }
    rows += static_cast<int64_t>(item.ids.size());
    segments.push_back(LlamaModel::Segment{.ids = item.ids,
                                           .first_position = item.sequence->length_,
                                           .kv = item.sequence->kv_.get(),
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
  if (sequence.cache_ == nullptr) return absl::FailedPreconditionError("ExportKv: a paged sequence moves whole blocks");
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
  if (sequence.cache_ == nullptr) return absl::FailedPreconditionError("AppendKv: a paged sequence moves whole blocks");
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

absl::Status Engine::ExportBlocks(const Sequence& sequence, int64_t first_block,
                                  absl::Span<std::byte* const> payloads) {
  const int64_t bt = options_.kv_block_tokens, count = static_cast<int64_t>(payloads.size());
  if (first_block < 0 || (first_block + count) * bt > sequence.length_) {
    return absl::OutOfRangeError(StrCat("ExportBlocks: blocks [", first_block, ", ", first_block + count, ") of ", bt,
                                        " tokens in a ", sequence.length_, "-token sequence"));
  }
  if (sequence.paged_ == nullptr) {
    for (int64_t i = 0; i < count; ++i) {
      STRATA_RETURN_IF_ERROR(ExportKv(sequence, (first_block + i) * bt, bt,
                                      absl::MakeSpan(payloads[i], static_cast<size_t>(KvPayloadBytes(bt)))));
    }
    return absl::OkStatus();
  }
  return pool_->CopyToHost(sequence.paged_->blocks().subspan(first_block, count), payloads);
}

absl::Status Engine::ImportBlocks(Sequence& sequence, absl::Span<const std::byte* const> payloads) {
  const int64_t bt = options_.kv_block_tokens, count = static_cast<int64_t>(payloads.size());
  if (sequence.length_ % bt != 0 || sequence.length_ + count * bt > sequence.capacity_) {
    return absl::OutOfRangeError(StrCat("ImportBlocks: ", count, " blocks of ", bt, " tokens after ", sequence.length_,
                                        " tokens, in a sequence of capacity ", sequence.capacity_));
  }
  if (sequence.paged_ == nullptr) {
    for (int64_t i = 0; i < count; ++i) {
      STRATA_RETURN_IF_ERROR(
          AppendKv(sequence, absl::MakeConstSpan(payloads[i], static_cast<size_t>(KvPayloadBytes(bt))), bt));
    }
    return absl::OkStatus();
  }
  const int64_t first_block = sequence.length_ / bt;
  STRATA_RETURN_IF_ERROR(pool_->CopyFromHost(payloads, sequence.paged_->blocks().subspan(first_block, count)));
  sequence.length_ += count * bt;
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<std::byte>> Engine::AllocateHostBytes(uint64_t bytes) {
  const uint64_t words = (bytes + sizeof(float) - 1) / sizeof(float);
  STRATA_ASSIGN_OR_RETURN(Tensor memory, backend_->AllocateHost(DType::kF32, 1, static_cast<int64_t>(words)));
  auto* data = memory.data<std::byte>();
  return std::shared_ptr<std::byte>(data, [memory = std::move(memory)](std::byte*) {});
}

}  // namespace strata::engine
