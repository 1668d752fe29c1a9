// Importance-aware sparse decode (LeoAM, with Quest's key bounds as the chunk abstract). The keys of
// each KV head are cut into chunks of `chunk_tokens`; a chunk's abstract is the element-wise minimum and
// maximum of its keys. A decode query bounds q·k over a chunk from the abstract alone,
//   score(chunk) = max over the head's query group of  sum_d max(q_d * min_d, q_d * max_d)  >= q·k,
// keeps the best chunks, and only those chunks' K and V are gathered (from HBM or, over PCIe, from
// page-locked host memory) for exact attention. Pointers are device pointers unless a comment says
// otherwise; every launcher checks its arguments, enqueues on `stream` and returns a Status.
//
// Bounds layout: [num_kv_heads * num_chunks, 2 * head_dim] of the activation dtype; row h * num_chunks + c
// holds chunk c of head h: the minimum over its keys in columns [0, head_dim), the maximum in
// [head_dim, 2 * head_dim). Exact in BF16 (min and max only pick stored values).
#ifndef STRATA_KERNELS_SPARSE_KV_H_
#define STRATA_KERNELS_SPARSE_KV_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "common/dtype.h"

namespace strata::kernels {

// Brings the bounds of every chunk that rows [first, first + rows) of a head-major layer touch up to
// date: k is [num_kv_heads * capacity_tokens, head_dim] (row h * capacity + t is token t of head h). A
// chunk that starts inside the range is set from the range's rows; one that started before it is widened.
absl::Status UpdateKeyBounds(DType dtype, const void* k, int64_t num_kv_heads, int64_t capacity_tokens,
                             int64_t head_dim, int64_t first, int64_t rows, int64_t chunk_tokens, int64_t num_chunks,
                             void* bounds, cudaStream_t stream);

struct ChunkSelection {
  int64_t num_heads = 0;     // query heads (a multiple of num_kv_heads)
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t num_chunks = 0;    // bounds rows per KV head
  int64_t candidates = 0;    // chunks [0, candidates) compete (<= num_chunks)
  int64_t select = 0;        // chunks kept per KV head (<= candidates)
  int64_t sink_chunks = 0;   // chunks [0, sink_chunks) are always kept (<= select)
};

// Scores chunks [0, candidates) of every KV head for the query q [1, num_heads * head_dim] and writes the
// ids of the `select` best (ties: lower ids first) in ascending order to chunk_ids [num_kv_heads,
// select] (int32). `scores` is scratch of num_kv_heads * candidates floats.
absl::Status SelectChunks(DType dtype, const void* q, const void* bounds, const ChunkSelection& selection,
                          float* scores, int32_t* chunk_ids, cudaStream_t stream);

// Where a gather reads each KV head's rows: row 0 of its keys and values (chunk c starts at row
// c * chunk_tokens), and the first of its tail rows. Device memory or page-locked host memory (read over
// PCIe by the kernel itself: thousands of small chunks need no copy-engine round trips).
struct ChunkSources {
  static constexpr int kMaxKvHeads = 32;
  const void* k[kMaxKvHeads] = {};
  const void* v[kMaxKvHeads] = {};
  const void* k_tail[kMaxKvHeads] = {};
  const void* v_tail[kMaxKvHeads] = {};
};

// Per KV head h: rows [i * chunk_tokens, (i + 1) * chunk_tokens) of the head-major outputs k_out and v_out
// ([num_kv_heads * out_capacity, head_dim]) receive chunk chunk_ids[h * select + i], and rows
// [select * chunk_tokens, select * chunk_tokens + tail_rows) the head's tail rows.
absl::Status GatherChunks(DType dtype, const ChunkSources& sources, int64_t num_kv_heads, int64_t head_dim,
                          const int32_t* chunk_ids, int64_t select, int64_t chunk_tokens, int64_t tail_rows,
                          void* k_out, void* v_out, int64_t out_capacity, cudaStream_t stream);

}  // namespace strata::kernels

#endif  // STRATA_KERNELS_SPARSE_KV_H_
