// KvPool: paged KV (vLLM's PagedAttention). One pool of fixed blocks per engine, in backend memory, each
// block holding K and V of every layer for `block_tokens` tokens in the block payload layout
// (ARCHITECTURE.md: [layer][K|V][kv_head][token][head_dim]), so a block moves to or from a host payload
// as one contiguous copy. A sequence holds a block table; full blocks are shared between sequences by
// reference count (a cached prefix is attached, not copied) and go back to the free list at zero.
// When Allocate finds too few free blocks it asks the reclaimer (the worker's tier G) to drop cached
// blocks first.
//
// Not thread-safe: used by the engine thread only.
#ifndef STRATA_WORKER_ENGINE_KV_POOL_H_
#define STRATA_WORKER_ENGINE_KV_POOL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/engine/backend.h"
#include "worker/engine/kv_cache.h"

namespace strata::engine {

struct KvPoolShape {
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  DType dtype = DType::kF32;
  int64_t block_tokens = 16;

  // Rows of head_dim elements in one block, and its bytes (== Engine::KvPayloadBytes(block_tokens)).
  int64_t BlockRows() const { return num_layers * 2 * num_kv_heads * block_tokens; }
  int64_t BlockBytes() const { return BlockRows() * head_dim * static_cast<int64_t>(DTypeSize(dtype)); }
};

class KvPool {
 public:
  // A pool of `num_blocks` blocks in `backend`'s memory (which must outlive it).
  static absl::StatusOr<std::unique_ptr<KvPool>> Create(Backend& backend, const KvPoolShape& shape,
                                                        int64_t num_blocks);

  const KvPoolShape& shape() const { return shape_; }
  int64_t block_tokens() const { return shape_.block_tokens; }
  int64_t num_blocks() const { return static_cast<int64_t>(refs_.size()); }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int32_t refs(int32_t block) const { return refs_[block]; }

  // `count` free blocks, one reference each. When fewer are free, the reclaimer is asked for the rest
  // first; ResourceExhausted if they still are not there (nothing taken).
  absl::StatusOr<std::vector<int32_t>> Allocate(int64_t count);
  // One more reference to each block (each must be referenced already).
  void Ref(absl::Span<const int32_t> blocks);
  // One reference less; a block with none left is free again.
  void Unref(absl::Span<const int32_t> blocks);

  // Called with the number of blocks Allocate still lacks; drops references to cached blocks.
  void SetReclaimer(std::function<void(int64_t needed)> reclaimer) { reclaimer_ = std::move(reclaimer); }

  // Layer `layer` of a sequence whose block table is `table` (capacity: its blocks' tokens).
  KvLayer Layer(int64_t layer, const Indices& table) const;

  // Bulk copies of whole blocks to and from host payloads (BlockBytes() each): Backend::CopyBlocksToHost.
  absl::Status CopyToHost(absl::Span<const int32_t> blocks, absl::Span<std::byte* const> payloads);
  absl::Status CopyFromHost(absl::Span<const std::byte* const> payloads, absl::Span<const int32_t> blocks);

 private:
  KvPool(Backend& backend, const KvPoolShape& shape, Tensor storage, int64_t num_blocks);

  Backend& backend_;
  KvPoolShape shape_;
  Tensor storage_;  // [num_blocks * BlockRows(), head_dim]
  std::vector<int32_t> refs_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
  std::function<void(int64_t)> reclaimer_;
};

// A sequence's KV in the pool: its block table (uploaded once) and one reference to each block, dropped
// when it dies. Every layer is always in backend memory, so Acquire is a view and the rest do nothing.
class PagedKv final : public SequenceKv {
 public:
  // Takes over one reference to each of `blocks`.
  static absl::StatusOr<std::unique_ptr<PagedKv>> Create(KvPool& pool, Backend& backend, std::vector<int32_t> blocks);
  ~PagedKv() override;

  absl::Span<const int32_t> blocks() const { return blocks_; }
  int32_t Slot(int64_t token) const override;

  int64_t num_layers() const override { return pool_.shape().num_layers; }
  int64_t capacity_tokens() const override;
  bool AllOnDevice() const override { return true; }
  bool paged() const override { return true; }
  absl::StatusOr<KvLayer> Acquire(int64_t layer, int64_t valid_tokens) override;
  absl::Status Release(int64_t, int64_t, int64_t) override { return absl::OkStatus(); }
  absl::Status Prefetch(int64_t, int64_t) override { return absl::OkStatus(); }
  absl::Status Finish() override { return absl::OkStatus(); }

 private:
  PagedKv(KvPool& pool, std::vector<int32_t> blocks, Indices table)
      : pool_(pool), blocks_(std::move(blocks)), table_(std::move(table)) {}

  KvPool& pool_;
  std::vector<int32_t> blocks_;
  Indices table_;
};

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_KV_POOL_H_
