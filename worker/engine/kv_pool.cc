#include "worker/engine/kv_pool.h"

#include <limits>

#include "common/strings.h"

namespace strata::engine {

absl::StatusOr<std::unique_ptr<KvPool>> KvPool::Create(Backend& backend, const KvPoolShape& shape,
                                                       int64_t num_blocks) {
  if (shape.num_layers <= 0 || shape.num_kv_heads <= 0 || shape.head_dim <= 0 || shape.block_tokens <= 0) {
    return absl::InvalidArgumentError(StrCat("KV pool: ", shape.num_layers, " layers of ", shape.num_kv_heads,
                                             " heads of width ", shape.head_dim, ", blocks of ", shape.block_tokens,
                                             " tokens"));
  }
  if (num_blocks <= 0 || num_blocks > std::numeric_limits<int32_t>::max() / shape.block_tokens) {
    return absl::InvalidArgumentError(StrCat("KV pool: ", num_blocks, " blocks"));
  }
  absl::StatusOr<Tensor> storage =
      backend.Allocate(shape.dtype, num_blocks * shape.BlockRows(), shape.head_dim);
  if (!storage.ok()) {
    return absl::ResourceExhaustedError(StrCat("KV pool: ", num_blocks, " blocks of ", shape.block_tokens,
                                               " tokens take ", FormatGiB(num_blocks * shape.BlockBytes()), ": ",
                                               storage.status().message()));
  }
  return std::unique_ptr<KvPool>(new KvPool(backend, shape, *std::move(storage), num_blocks));
}

KvPool::KvPool(Backend& backend, const KvPoolShape& shape, Tensor storage, int64_t num_blocks)
    : backend_(backend), shape_(shape), storage_(std::move(storage)), refs_(num_blocks, 0) {
  free_.reserve(num_blocks);
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

absl::StatusOr<std::vector<int32_t>> KvPool::Allocate(int64_t count) {
  if (count < 0) return absl::InvalidArgumentError(StrCat("KV pool: allocate ", count, " blocks"));
  if (count > num_blocks()) {
    return absl::ResourceExhaustedError(
        StrCat("KV pool: ", count, " blocks wanted, the whole pool has ", num_blocks(), ": raise its size"));
  }
  if (free_blocks() < count && reclaimer_) reclaimer_(count - free_blocks());
  if (free_blocks() < count) {
    return absl::ResourceExhaustedError(StrCat("KV pool: ", count, " blocks wanted, ", free_blocks(), " of ",
                                               num_blocks(), " free (the rest held by running sequences)"));
  }
  std::vector<int32_t> blocks(free_.end() - count, free_.end());
  free_.resize(free_.size() - count);
  for (int32_t b : blocks) refs_[b] = 1;
  return blocks;
}

void KvPool::Ref(absl::Span<const int32_t> blocks) {
  for (int32_t b : blocks) {
    STRATA_CHECK(refs_[b] > 0);
    ++refs_[b];
  }
}

void KvPool::Unref(absl::Span<const int32_t> blocks) {
  for (int32_t b : blocks) {
    STRATA_CHECK(refs_[b] > 0);
    if (--refs_[b] == 0) free_.push_back(b);
  }
}

KvLayer KvPool::Layer(int64_t layer, const Indices& table) const {
  const int64_t heads = shape_.num_kv_heads, bt = shape_.block_tokens;
  const int64_t k_row = layer * 2 * heads * bt, v_row = k_row + heads * bt;
  KvLayer out;
  out.k = storage_.Rows(k_row, storage_.rows() - k_row);
  out.v = storage_.Rows(v_row, storage_.rows() - v_row);
  out.num_kv_heads = heads;
  out.capacity_tokens = table.size * bt;
  out.block_tokens = bt;
  out.block_rows = shape_.BlockRows();
  out.block_table = table;
  return out;
}

absl::Status KvPool::CopyToHost(absl::Span<const int32_t> blocks, absl::Span<std::byte* const> payloads) {
  return backend_.CopyBlocksToHost(storage_, blocks, shape_.BlockBytes(), payloads);
}

absl::Status KvPool::CopyFromHost(absl::Span<const std::byte* const> payloads, absl::Span<const int32_t> blocks) {
  return backend_.CopyBlocksFromHost(payloads, storage_, blocks, shape_.BlockBytes());
}

absl::StatusOr<std::unique_ptr<PagedKv>> PagedKv::Create(KvPool& pool, Backend& backend,
                                                         std::vector<int32_t> blocks) {
  absl::StatusOr<Indices> table = backend.UploadIndices(blocks);
  if (!table.ok()) {
    pool.Unref(blocks);
    return table.status();
  }
  return std::unique_ptr<PagedKv>(new PagedKv(pool, std::move(blocks), *std::move(table)));
}

PagedKv::~PagedKv() { pool_.Unref(blocks_); }

int64_t PagedKv::capacity_tokens() const { return static_cast<int64_t>(blocks_.size()) * pool_.block_tokens(); }

int32_t PagedKv::Slot(int64_t token) const {
  const int64_t bt = pool_.block_tokens();
  return static_cast<int32_t>(blocks_[token / bt] * bt + token % bt);
}

absl::StatusOr<KvLayer> PagedKv::Acquire(int64_t layer, int64_t valid_tokens) {
  if (layer < 0 || layer >= num_layers() || valid_tokens < 0 || valid_tokens > capacity_tokens()) {
    return absl::OutOfRangeError(StrCat("PagedKv: layer ", layer, " with ", valid_tokens, " valid tokens of ",
                                        capacity_tokens()));
  }
  return pool_.Layer(layer, table_);
}

}  // namespace strata::engine
