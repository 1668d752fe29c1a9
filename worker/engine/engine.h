// Engine: one model on one backend. Runs tokens of a sequence through the model, mini-sequence by
// mini-sequence, and keeps each sequence's KV cache.
#ifndef STRATA_WORKER_ENGINE_ENGINE_H_
#define STRATA_WORKER_ENGINE_ENGINE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/engine/backend.h"
#include "worker/engine/kv_cache.h"
#include "worker/engine/kv_pool.h"
#include "model/model.h"

namespace strata::engine {

class LlamaModel;  // llama.h, private to the engine

struct EngineOptions {
  // Rows that the projections, the MLP and the LM head see at once during prefill (MsT / MOM
  // mini-sequences). Smaller bounds activation memory; any value gives the same outputs. Default 1024.
  int64_t mini_sequence_tokens = 1024;
  // Where the residual stream of a forward pass's rows lives: in backend memory while it fits (kAuto:
  // with room for the mini-sequence activations besides), else in pinned host memory, a mini-sequence
  // copied in and out at a time. The same outputs either way.
  enum class HiddenStates { kAuto, kDevice, kHost };
  HiddenStates hidden_states = HiddenStates::kAuto;
  // Paged KV (kv_pool.h): a pool of blocks of kv_block_tokens tokens in backend memory, from which every
  // sequence created with the default placement takes its blocks. Its size, the first that is set:
  // kv_pool_blocks blocks; as many as fit kv_pool_bytes; as many as fit kv_pool_memory_fraction of the
  // device memory left free once the weights are loaded and the activations of a pass of
  // kv_pool_reserve_tokens rows are set aside (backends with device memory only). None (default): no
  // pool; each sequence gets a KvCache of its own (kv_cache.h), placed by its KvPlacement.
  int64_t kv_pool_blocks = 0;
  int64_t kv_pool_bytes = 0;
  double kv_pool_memory_fraction = 0;
  int64_t kv_pool_reserve_tokens = 4096;
  // Tokens per block: of the pool, and of ExportBlocks/ImportBlocks. Default 16.
  int64_t kv_block_tokens = 16;
};

// Where a sequence's KV lives (kv_cache.h): by budgets (default: everything in backend memory), or by
// an explicit per-head plan. With the default placement, an engine with a pool pages the sequence.
struct KvPlacement {
  KvBudgets budgets;
  std::optional<ResidencyPlan> plan;
  SparseDecode sparse;  // approximate decode over offloaded layers (kv_cache.h); off by default

  bool IsDefault() const {
    return !plan.has_value() && budgets.device_bytes == KvBudgets::kUnlimited && budgets.host_bytes == 0 &&
           budgets.ssd_bytes == 0;
  }
};

// What a sequence needs before it runs: its KV placement and peak memory per tier.
struct MemoryPlan {
  ResidencyPlan residency;
  KvMemory kv;                   // KV, staging and bounce buffers
  int64_t activation_bytes = 0;  // backend memory of the largest forward pass (the prompt's)
  int64_t weight_bytes = 0;      // already resident
};

// One request's tokens and their KV cache on the engine's backend. Move-only; create with
// Engine::NewSequence. It must not outlive its engine (it holds blocks of the engine's pool).
class Sequence {
 public:
  int64_t length() const { return length_; }      // tokens whose KV is cached
  int64_t capacity() const { return capacity_; }  // tokens the cache can hold
  bool paged() const { return paged_ != nullptr; }
  // Pool blocks holding tokens [0, capacity), in order (paged sequences; empty otherwise). Blocks wholly
  // below length() are final and may be shared (KvPool::Ref).
  absl::Span<const int32_t> blocks() const;
  // Transfers between tiers so far (zero for paged sequences: they never leave backend memory).
  KvTransferStats transfer_stats() const;
  // Changes the sparse-decode budget of a sequence created with sparse decode on (KvPlacement::sparse);
  // 0 makes its decode exact again. FailedPrecondition for other sequences.
  absl::Status SetSparseDecodeBudget(int64_t budget_tokens);

 private:
  friend class Engine;
  std::unique_ptr<SequenceKv> kv_;
  KvCache* cache_ = nullptr;  // kv_, when placed head by head
  PagedKv* paged_ = nullptr;  // kv_, when paged
  int64_t length_ = 0;
  int64_t capacity_ = 0;
};

// Not thread-safe: one caller at a time (the backend orders its work on one stream).
class Engine {
 public:
  // Binds `model`'s weights on `backend` (the engine keeps the weights' memory alive; `model` may be
  // destroyed afterwards).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const model::Model& model, std::unique_ptr<Backend> backend,
                                                        const EngineOptions& options = {});
  // An engine over a model already bound on `backend` (benchmarks build random weights).
  static absl::StatusOr<std::unique_ptr<Engine>> Create(std::unique_ptr<Backend> backend, LlamaModel model,
                                                        const EngineOptions& options = {});

  // The placement and peak memory of a sequence of `capacity_tokens` whose first forward pass has
  // `prompt_tokens` tokens. ResourceExhausted, naming the budget to raise, when it cannot fit: the
  // budgets, or the device's free memory.
  absl::StatusOr<MemoryPlan> PlanMemory(int64_t capacity_tokens, int64_t prompt_tokens,
                                        const KvPlacement& placement = {});
  // A sequence whose KV cache holds up to `capacity_tokens` tokens, placed as `placement` says (in the
  // pool, with the default placement on an engine that has one: ResourceExhausted when the pool has
  // too few free blocks even after its reclaimer ran).
  absl::StatusOr<Sequence> NewSequence(int64_t capacity_tokens, const KvPlacement& placement = {});
  // A paged sequence that starts with `prefix`, full pool blocks holding its first tokens (a cached
  // prompt prefix): it shares them (one more reference each) instead of copying them, and its length
  // starts at their tokens. FailedPrecondition without a pool.
  absl::StatusOr<Sequence> NewSequence(int64_t capacity_tokens, absl::Span<const int32_t> prefix);
  // The paged-KV pool (EngineOptions::kv_pool_blocks), or null.
  KvPool* pool() { return pool_.get(); }

  // Appends `ids` to `sequence` (prefill when many, a decode step when one) and returns the logits of the
  // rows `logit_rows` (indices into `ids`), row-major [logit_rows.size(), vocab_size]. Only those rows
  // reach the LM head. On error the sequence is unchanged.
  absl::StatusOr<std::vector<float>> Forward(Sequence& sequence, absl::Span<const int32_t> ids,
                                             absl::Span<const int64_t> logit_rows);

  // One sequence's part of a batched forward pass.
  struct BatchItem {
    Sequence* sequence = nullptr;
    absl::Span<const int32_t> ids;         // at least one
    absl::Span<const int64_t> logit_rows;  // indices into ids
  };
  // Forward of several sequences as one pass (continuous batching): the projections, the MLP and the
  // LM head see the rows of all items together (still at most mini_sequence_tokens at a time); attention
  // runs per sequence over its own KV. Returns each item's logits as Forward would, and gives the same
  // values as running the items one by one. On error no sequence changes.
  absl::StatusOr<std::vector<std::vector<float>>> ForwardBatch(absl::Span<const BatchItem> items);

  // KV as block payloads (ARCHITECTURE.md: [layer][K|V][kv_head][token][head_dim], kv_dtype() elements),
  // the bytes that the worker's host tier and the kvstores hold.
  DType kv_dtype() const;
  int64_t KvPayloadBytes(int64_t tokens) const;
  // Copies tokens [first_token, first_token + tokens) of `sequence`'s KV (all cached) into `payload`
  // (KvPayloadBytes(tokens) bytes, host memory).
  absl::Status ExportKv(const Sequence& sequence, int64_t first_token, int64_t tokens, absl::Span<std::byte> payload);
  // Appends `tokens` tokens of KV from `payload` at the end of `sequence` (as if they had been run
  // through Forward): the prefix of a prompt fetched instead of computed.
  absl::Status AppendKv(Sequence& sequence, absl::Span<const std::byte> payload, int64_t tokens);

  // The same in whole blocks of EngineOptions::kv_block_tokens and in bulk: blocks [first_block,
  // first_block + payloads.size()) of `sequence` (all cached) into one payload each
  // (KvPayloadBytes(kv_block_tokens) bytes), and payloads appended as whole blocks at the end of
  // `sequence` (whose length must be a multiple of kv_block_tokens). On a paged sequence: bulk copies of
  // whole pool blocks (KvPool::CopyToHost / CopyFromHost). Complete when they return.
  absl::Status ExportBlocks(const Sequence& sequence, int64_t first_block, absl::Span<std::byte* const> payloads);
  absl::Status ImportBlocks(Sequence& sequence, absl::Span<const std::byte* const> payloads);
  // `bytes` of host memory for such payloads, alive while the pointer is: page-locked where the backend
  // has a device, so that ExportBlocks and ImportBlocks move a paged block straight between the pool and
  // it by DMA (payloads elsewhere are staged through the backend's own pinned chunks).
  absl::StatusOr<std::shared_ptr<std::byte>> AllocateHostBytes(uint64_t bytes);
  int64_t block_tokens() const { return options_.kv_block_tokens; }

  const model::ModelConfig& config() const;
  std::string_view backend_name() const;
  const Backend& backend() const { return *backend_; }

  ~Engine();

 private:
  Engine(std::unique_ptr<Backend> backend, std::unique_ptr<LlamaModel> model, const EngineOptions& options);
  KvShape KvShapeOf(int64_t capacity_tokens) const;
  // Whether a pass of `rows` new tokens keeps its hidden states in host memory (EngineOptions::hidden_states).
  bool HiddenOnHost(int64_t rows);

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<LlamaModel> model_;  // declared after backend_: weights are released first
  EngineOptions options_;
  std::unique_ptr<KvPool> pool_;  // after backend_: released first
};

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_ENGINE_H_
