// The CPU reference of sparse decode's chunk bounds and chunk choice (backend.h, SparseGather): float32,
// what the CPU backend runs and what the CUDA kernels (kernels/sparse_kv.h) are tested against.
#ifndef STRATA_WORKER_ENGINE_CHUNK_SELECTION_H_
#define STRATA_WORKER_ENGINE_CHUNK_SELECTION_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

#include "worker/engine/backend.h"

namespace strata::engine {

// Checks a GatherImportantKv call's shapes (both backends): the gather's counts, `bounds`, the per-head
// sources, the query row and the contiguous `out` that must hold select * chunk_tokens + tail_rows rows.
absl::Status CheckSparseGather(const Tensor& q, const Tensor& bounds, const SparseGather& gather,
                               const AttentionParams& params, const KvLayer& out);

// k: a head-major layer [num_kv_heads * capacity_tokens, head_dim]; bounds: [num_kv_heads * num_chunks,
// 2 * head_dim]. Brings the bounds of the chunks that tokens [first, first + rows) touch up to date.
void UpdateKeyBoundsReference(const float* k, int64_t num_kv_heads, int64_t capacity_tokens, int64_t head_dim,
                              int64_t first, int64_t rows, int64_t chunk_tokens, int64_t num_chunks, float* bounds);

// Chunk c's score for KV head `kv_head` and the query row q [num_heads * head_dim]: the upper bound of
// q·k over its keys that SparseGather describes (+inf for sink chunks).
float ChunkScoreReference(const float* q, const float* bounds, const SparseGather& gather,
                          const AttentionParams& params, int64_t kv_head, int64_t chunk);

// The chosen chunks, [num_kv_heads][gather.select] flattened, each head's ids ascending: the `select`
// highest scores among chunks [0, candidates), ties to the lower id.
std::vector<int32_t> SelectChunksReference(const float* q, const float* bounds, const SparseGather& gather,
                                           const AttentionParams& params);

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_CHUNK_SELECTION_H_
