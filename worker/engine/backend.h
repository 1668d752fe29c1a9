// Backend: the operations of a Llama-family forward pass, implemented once per device (CPU and CUDA).
// The forward graph (llama.cc) is written once against this interface.
#ifndef STRATA_WORKER_ENGINE_BACKEND_H_
#define STRATA_WORKER_ENGINE_BACKEND_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/status.h"
#include "common/strings.h"
#include "worker/engine/tensor.h"
#include "model/safetensors.h"

namespace strata::engine {

// Int32 indices for the ops (block tables, per-row positions and KV slots): the host values and the
// same values in backend memory, uploaded once (Backend::UploadIndices) and read by many ops. Cheap to
// copy; Slice views a part.
struct Indices {
  std::shared_ptr<const std::vector<int32_t>> host;
  const int32_t* device = nullptr;  // == host->data() on a backend without device memory
  std::shared_ptr<const void> owner;
  int64_t offset = 0;
  int64_t size = 0;

  int32_t operator[](int64_t i) const { return (*host)[offset + i]; }
  const int32_t* device_data() const { return device + offset; }
  bool empty() const { return size == 0; }
  Indices Slice(int64_t begin, int64_t count) const {
    Indices out = *this;
    out.offset = offset + begin;
    out.size = count;
    return out;
  }
};

// K and V of one layer for one sequence, in one of two layouts (each row `head_dim` wide):
//  - contiguous (block_tokens == 0), head-major as in a block payload: row (head * capacity + t) of `k`
//    holds the key of token t for KV head `head`. Head-major keeps one head's keys contiguous, so
//    head-wise offload moves slices, not gathers.
//  - paged (block_tokens > 0, kv_pool.h): `k` and `v` view a pool of blocks from this layer's K (V) rows
//    on, and the key of token t for head h is row
//      block_table[t / block_tokens] * block_rows + h * block_tokens + t % block_tokens.
struct KvLayer {
  Tensor k;  // contiguous: [num_kv_heads * capacity_tokens, head_dim]
  Tensor v;  // same shape
  int64_t num_kv_heads = 0;
  int64_t capacity_tokens = 0;
  int64_t block_tokens = 0;  // paged only
  int64_t block_rows = 0;    // rows between consecutive pool blocks
  Indices block_table;       // the sequence's blocks, capacity_tokens / block_tokens of them

  bool paged() const { return block_tokens > 0; }
  // The row of `k` (and `v`) that holds token `token` of KV head `head` (host-side addressing).
  int64_t Row(int64_t head, int64_t token) const {
    if (!paged()) return head * capacity_tokens + token;
    return block_table[token / block_tokens] * block_rows + head * block_tokens + token % block_tokens;
  }
};

struct AttentionParams {
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  float scale = 1.0f;          // applied to q·k, usually 1/sqrt(head_dim)
  int64_t first_position = 0;  // position of query row 0; row i is at first_position + i
  int64_t window = 0;          // 0: full causal; else a query at p sees keys (p - window, p]
};

// Importance-aware sparse decode (kv_cache.h, SparseDecode). Keys are cut into chunks of chunk_tokens; a
// chunk's bounds are the element-wise minimum and maximum of its keys, kept in a backend tensor
// [num_kv_heads * num_chunks, 2 * head_dim] of the activation dtype (row h * num_chunks + c: chunk c of KV
// head h, minima in the first head_dim columns). A query scores chunk c of KV head h by
//   max over the query heads of h's group of  sum_d max(q_d * min_d, q_d * max_d),
// an upper bound of q·k over the chunk's keys (Quest).
struct SparseGather {
  int64_t chunk_tokens = 0;
  int64_t num_chunks = 0;   // bounds rows per KV head
  int64_t candidates = 0;   // chunks [0, candidates) compete
  int64_t select = 0;       // chunks kept per KV head (<= candidates)
  int64_t sink_chunks = 0;  // chunks [0, sink_chunks) are always kept (<= select)
  // Per KV head: its rows from token 0 on (chunk c at row c * chunk_tokens), in backend memory or in
  // AllocateHost memory (read in place over the bus where the backend has a device).
  std::vector<Tensor> k_homes, v_homes;
  // Per KV head: the rows that follow the chosen chunks (tail_rows of them, in backend memory).
  std::vector<Tensor> k_tail, v_tail;
  int64_t tail_rows = 0;
};

// Queues of a backend: compute, and one per transfer direction so that uploads (host -> backend
// memory), downloads (backend -> host) and compute overlap where the device allows (CUDA: three
// streams, two copy engines). Work on one queue runs in order; across queues, order with fences.
enum class Queue { kCompute, kUpload, kDownload };

// A point in a queue's work, from Backend::Record. Empty (default) means "already complete".
struct Fence {
  std::shared_ptr<void> handle;
};

// Every compute call is ordered after the previous calls on the same backend. Shapes are checked by each call
// (a mismatch returns InvalidArgument); tensors passed in must come from this backend. Not thread-safe:
// one backend per thread of control.
class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string_view name() const = 0;
  // Element type of activations and the KV cache on this backend.
  virtual DType activation_dtype() const = 0;

  // Memory.
  virtual absl::StatusOr<Tensor> Allocate(DType dtype, int64_t rows, int64_t cols) = 0;
  virtual absl::StatusOr<Tensor> Upload(absl::Span<const float> values, int64_t rows, int64_t cols) = 0;
  // A checkpoint tensor viewed as [rows, cols] in the layout the ops expect: used in place where the
  // backend can read the bytes as they are, converted otherwise. Keeps `info.mapping` alive as needed.
  virtual absl::StatusOr<Tensor> LoadWeight(const model::TensorInfo& info, int64_t rows, int64_t cols) = 0;
  // Copies `src` into host floats; waits for the work that produces it.
  virtual absl::Status CopyToHost(const Tensor& src, absl::Span<float> dst) = 0;

  // Host memory for the host side of transfers (offloaded KV, staging): page-locked where the backend
  // has a device, so copies run at full bus speed and asynchronously.
  virtual absl::StatusOr<Tensor> AllocateHost(DType dtype, int64_t rows, int64_t cols) = 0;
  // Copies rows [src_row, src_row + rows) of `src` to rows [dst_row, ...) of `dst` on `queue`, after the
  // queue's earlier work. Either tensor may be backend memory or host memory (AllocateHost, or any host
  // memory wrapped in a Tensor); same dtype and width. Asynchronous: the memory must stay valid until a
  // fence recorded after it completes.
  virtual absl::Status CopyRows(const Tensor& src, int64_t src_row, Tensor& dst, int64_t dst_row, int64_t rows,
                                Queue queue) = 0;
  // A fence after the work enqueued on `queue` so far.
  virtual absl::StatusOr<Fence> Record(Queue queue) = 0;
  // Later work on `queue` starts after `fence` (without blocking the host).
  virtual absl::Status Wait(Queue queue, const Fence& fence) = 0;
  // Blocks the calling thread until `fence` has passed.
  virtual absl::Status Synchronize(const Fence& fence) = 0;
  // Seconds between two passed fences of one queue (how long compute stalled on a transfer); 0 where
  // the backend's queues run on the calling thread.
  virtual absl::StatusOr<double> ElapsedSeconds(const Fence& from, const Fence& to) {
    (void)from;
    (void)to;
    return 0.0;
  }
  // Free memory of the backend's device, where it has one (the memory plan checks against it).
  virtual std::optional<int64_t> FreeDeviceBytes() { return std::nullopt; }
  // `values` in backend memory, for the ops that take Indices. Ordered like the compute calls.
  virtual absl::StatusOr<Indices> UploadIndices(std::vector<int32_t> values) = 0;

  // Bulk block movement between a pool (backend memory, [blocks * block_bytes] bytes viewed by `pool`)
  // and host memory: block blocks[i] to or from host[i], block_bytes each. Where the backend has a device:
  // one DMA per run of adjacent blocks for host buffers in page-locked memory (AllocateHost), a gather
  // (scatter) kernel and one DMA per chunk of many blocks through pinned staging for the others; after
  // the compute enqueued so far (and before compute enqueued later, for the copy into the pool).
  // Complete when they return.
  virtual absl::Status CopyBlocksToHost(const Tensor& pool, absl::Span<const int32_t> blocks, int64_t block_bytes,
                                        absl::Span<std::byte* const> host) = 0;
  virtual absl::Status CopyBlocksFromHost(absl::Span<const std::byte* const> host, Tensor& pool,
                                          absl::Span<const int32_t> blocks, int64_t block_bytes) = 0;

  // out[i] = table[ids[i]]. Ids are checked against the table.
  virtual absl::Status Embed(const Tensor& table, absl::Span<const int32_t> ids, Tensor& out) = 0;
  // out = x / rms(x) * weight, per row, with rms over the row plus `eps`.
  virtual absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) = 0;
  // out = x · weightᵀ (+ bias): x [n, in], weight [out, in] (the Hugging Face layout), bias [1, out] or empty.
  virtual absl::Status Linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out) = 0;
  // Rotates each head_dim-wide head of each row of q and of k in place (rotate-half RoPE); row i of both
  // is at position first_position + i, so the angles are computed once for the two; inv_freq is
  // [1, head_dim / 2].
  virtual absl::Status Rope(const Tensor& inv_freq, int64_t first_position, Tensor& q, Tensor& k) = 0;
  // Rope where row i of q and k is at position positions[i] (rows of several sequences in one call).
  virtual absl::Status RopeAt(const Tensor& inv_freq, const Indices& positions, Tensor& q, Tensor& k) = 0;
  // Writes rows of k and v ([n, num_kv_heads * head_dim]) at positions first_position.. into `layer`
  // (contiguous).
  virtual absl::Status WriteKv(const Tensor& k, const Tensor& v, int64_t first_position, KvLayer& layer) = 0;
  // Writes row i of k and v into the paged `layer` at token slot slots[i] (block * block_tokens + offset
  // in the block); a negative slot skips the row.
  virtual absl::Status WriteKvAt(const Tensor& k, const Tensor& v, const Indices& slots, KvLayer& layer) = 0;
  // Causal grouped-query attention of q [n, num_heads * head_dim] over the keys at positions
  // [0, first_position + n) of `layer`; out has q's shape.
  virtual absl::Status Attention(const Tensor& q, const KvLayer& layer, const AttentionParams& params, Tensor& out) = 0;
  // Batched decode over paged sequences: row b of q is one new token of sequence b at position
  // positions[b], attending over that sequence's keys [0, positions[b]] through its block table, row b
  // of `tables` (table_stride entries each; `layer` is any paged view of the same pool layer, and
  // params.first_position is ignored). out has q's shape. The default runs Attention row by row.
  virtual absl::Status DecodeAttention(const Tensor& q, const KvLayer& layer, const Indices& tables,
                                       int64_t table_stride, const Indices& positions,
                                       const AttentionParams& params, Tensor& out) {
    if (!layer.paged() || positions.size != q.rows() || tables.size != q.rows() * table_stride) {
      return absl::InvalidArgumentError(StrCat("DecodeAttention: ", q.rows(), " rows, ", positions.size,
                                               " positions, ", tables.size, " table entries of stride ",
                                               table_stride, (layer.paged() ? "" : ", a layer that is not paged")));
    }
    for (int64_t b = 0; b < q.rows(); ++b) {
      KvLayer row_layer = layer;
      row_layer.block_table = tables.Slice(b * table_stride, table_stride);
      row_layer.capacity_tokens = table_stride * layer.block_tokens;
      AttentionParams row_params = params;
      row_params.first_position = positions[b];
      Tensor row_out = out.Rows(b, 1);
      STRATA_RETURN_IF_ERROR(Attention(q.Rows(b, 1), row_layer, row_params, row_out));
    }
    return absl::OkStatus();
  }
  // Sparse decode (SparseGather above). Brings the bounds of the chunks that tokens [first, first + rows)
  // of the contiguous `layer` touch up to date: a chunk that starts inside the range is set from it, one
  // that started before is widened.
  virtual absl::Status UpdateKeyBounds(const KvLayer& layer, int64_t first, int64_t rows, int64_t chunk_tokens,
                                       Tensor& bounds) {
    (void)layer, (void)first, (void)rows, (void)chunk_tokens, (void)bounds;
    return absl::UnimplementedError(StrCat("sparse decode is not implemented on the ", name(), " backend"));
  }
  // Scores chunks [0, gather.candidates) for the one query row q [1, num_heads * head_dim] and fills the
  // contiguous `out` per KV head: rows [0, select * chunk_tokens) with the `select` best chunks' K and V
  // in ascending chunk order (ties: lower chunks first), then the tail rows.
  virtual absl::Status GatherImportantKv(const Tensor& q, const Tensor& bounds, const SparseGather& gather,
                                         const AttentionParams& params, KvLayer& out) {
    (void)q, (void)bounds, (void)gather, (void)params, (void)out;
    return absl::UnimplementedError(StrCat("sparse decode is not implemented on the ", name(), " backend"));
  }
  // out = silu(gate) * up, elementwise.
  virtual absl::Status SwiGlu(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // x += delta, elementwise.
  virtual absl::Status Add(const Tensor& delta, Tensor& x) = 0;
  // x += delta, then out = RmsNorm(x, weight, eps): the residual add and the next norm in one pass where
  // the backend fuses them. The default runs Add then RmsNorm.
  virtual absl::Status AddRmsNorm(const Tensor& delta, Tensor& x, const Tensor& weight, float eps, Tensor& out) {
    STRATA_RETURN_IF_ERROR(Add(delta, x));
    return RmsNorm(x, weight, eps, out);
  }

  // A decode step: every call between BeginStep and EndStep belongs to one token's forward pass. A
  // backend may record them and run them as one unit (CUDA graphs); then their effects, CopyToHost's
  // writes to host memory included, are complete only when EndStep returns OK. AbortStep abandons a
  // step that failed part-way (its recorded work does not run). Defaults: run each call as it comes.
  virtual absl::Status BeginStep() { return absl::OkStatus(); }
  virtual absl::Status EndStep() { return absl::OkStatus(); }
  virtual void AbortStep() {}
};

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_BACKEND_H_
