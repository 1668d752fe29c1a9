// The KV cache of one sequence, spread head by head over three tiers (HeadInfer, LeoAM): each
// (layer, KV head) lives in backend memory (HBM), in pinned host memory, or in a file on SSD, as its
// ResidencyPlan says. The forward pass sees one layer at a time: a layer whose heads are all in backend
// memory is used in place; any other layer is assembled in one of two staging slots in backend memory
// (double buffering), filled ahead of use on the upload queue while the previous layer computes, and
// the rows the layer wrote go back to each head's home on the download queue. Values are moved, never
// recomputed or converted, so every placement gives bit-identical results.
#ifndef STRATA_WORKER_ENGINE_KV_CACHE_H_
#define STRATA_WORKER_ENGINE_KV_CACHE_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/engine/backend.h"
#include "worker/engine/ssd_file.h"

namespace strata::engine {

enum class KvTier : uint8_t { kDevice, kHost, kSsd };
enum class KvPart : uint8_t { kKey, kValue };
std::string_view KvTierName(KvTier tier);

// "12.50 GiB": how memory plans and their errors print sizes.
std::string FormatGiB(int64_t bytes);

// The shape of one sequence's cache.
struct KvShape {
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t capacity_tokens = 0;
  DType dtype = DType::kF32;

  int64_t RowBytes() const { return head_dim * static_cast<int64_t>(DTypeSize(dtype)); }
  // K and V of one head over the capacity.
  int64_t HeadBytes() const { return 2 * capacity_tokens * RowBytes(); }
  int64_t TotalBytes() const { return num_layers * num_kv_heads * HeadBytes(); }
};

// How much KV each tier may hold for one sequence. Staging slots count against the device budget and
// the SSD tier's bounce buffers against the host budget.
struct KvBudgets {
  static constexpr int64_t kUnlimited = std::numeric_limits<int64_t>::max();
  int64_t device_bytes = kUnlimited;
  int64_t host_bytes = 0;
  int64_t ssd_bytes = 0;
  std::string ssd_dir;  // where SSD-tier files go (required when any head lands there)
  SsdIo ssd_io = SsdIo::kIoUring;
};

// Memory that a cache with a given plan takes, staging and bounce buffers included.
struct KvMemory {
  int64_t device_bytes = 0;
  int64_t host_bytes = 0;
  int64_t ssd_bytes = 0;
};

// Where each (layer, KV head) lives.
class ResidencyPlan {
 public:
  ResidencyPlan() = default;
  static ResidencyPlan Uniform(int64_t num_layers, int64_t num_kv_heads, KvTier tier);
  // tiers[layer * num_kv_heads + head].
  static absl::StatusOr<ResidencyPlan> FromTiers(int64_t num_layers, int64_t num_kv_heads, std::vector<KvTier> tiers);
  // Fills HBM first, layer by layer (a layer kept whole in HBM needs no staging), then host memory, then
  // SSD. When the budgets cannot hold `shape`, the error says which budget to raise and by how much.
  static absl::StatusOr<ResidencyPlan> FromBudgets(const KvShape& shape, const KvBudgets& budgets);

  KvTier tier(int64_t layer, int64_t head) const { return tiers_[layer * num_kv_heads_ + head]; }
  bool LayerOnDevice(int64_t layer) const;
  bool AllOnDevice() const;
  int64_t HeadsIn(KvTier tier) const;
  int64_t num_layers() const { return num_layers_; }
  int64_t num_kv_heads() const { return num_kv_heads_; }
  // Memory of a cache of `shape` under this plan.
  KvMemory Memory(const KvShape& shape) const;
  // "G G H S / ..." one letter per head, layers separated by '/': for logs and tests.
  std::string ToString() const;

 private:
  int64_t num_layers_ = 0;
  int64_t num_kv_heads_ = 0;
  std::vector<KvTier> tiers_;
};

// Importance-aware sparse decode (LeoAM, with Quest's key bounds as each chunk's abstract): opt-in and
// approximate. A cache keeps, per chunk of chunk_tokens keys of every KV head of each layer that is not
// wholly in HBM, the element-wise bounds of its keys in HBM (written as the keys are). In a one-token pass
// such a layer reads, per KV head, only the sink chunks, the chunks whose bounds promise the highest q·k
// (as many as the budget allows) and the recent window, instead of every key, and attends exactly over
// them. A budget that covers the context reads every chunk in order: the same outputs as exact decode.
// Layers with an SSD head or a sliding window stay exact.
struct SparseDecode {
  int64_t budget_tokens = 0;     // keys read per KV head and step, sinks and window included; 0: exact
  int64_t chunk_tokens = 32;     // keys per chunk (and per abstract)
  int64_t sink_tokens = 32;      // the first keys, always read (rounded up to whole chunks)
  int64_t recent_tokens = 256;   // the latest keys, always read

  bool enabled() const { return budget_tokens > 0; }
  absl::Status Validate() const;
  // HBM for a cache of `shape` under `plan`: the bounds of its sparse layers and one layer of chosen keys.
  int64_t DeviceBytes(const KvShape& shape, const ResidencyPlan& plan) const;
  // Rows per KV head of the buffer the chosen keys are gathered into.
  int64_t GatherRows(int64_t capacity_tokens) const;
  // The first key of the recent window that a step at `position` reads (a chunk boundary).
  int64_t TailFirst(int64_t position) const;
  // The counts of the gather for a query at `position` in a cache of `capacity_tokens` (SparseGather's
  // sources left empty): whole chunks before the window compete, the sinks and as many of the best as the
  // budget allows beside the window are kept; all of them when the budget covers the context.
  SparseGather Layout(int64_t position, int64_t capacity_tokens) const;
};

// Transfer counters of one cache, cumulative.
struct KvTransferStats {
  int64_t bytes_uploaded = 0;    // host/SSD -> staging (and HBM heads copied into staging)
  int64_t bytes_downloaded = 0;  // written rows back to their homes
  int64_t ssd_bytes_read = 0;
  int64_t ssd_bytes_written = 0;
  double ssd_read_s = 0;       // inside direct SSD reads
  double compute_stall_s = 0;  // compute waiting for uploads (GPU-side; 0 on the CPU backend)
  double host_transfer_s = 0;  // the calling thread inside transfers: SSD I/O, fence waits, CPU copies
  int64_t sparse_attentions = 0;      // layer attentions that read chosen chunks (SparseDecode)
  int64_t approximate_attentions = 0;  // ... of which left some keys out: the outputs are approximate
};

// The KV of one sequence as the forward pass sees it, a layer at a time. Two kinds: KvCache below
// (placed head by head over HBM, host memory and SSD, for one long sequence) and PagedKv (kv_pool.h:
// blocks of the engine's pool, shared between sequences by prefix).
//
// The forward pass of a layer that reads keys [0, valid_tokens) and writes rows [valid_tokens,
// valid_tokens + rows):
//   Acquire(layer, valid)     the layer in backend memory, keys [0, valid) in place (waits on compute
//                             for its prefetch; fetches now if none was started)
//   ... WriteKv / Attention on the returned KvLayer ...
//   Release(layer, valid, rows)  sends the written rows home (asynchronously)
//   Prefetch(layer + 1, valid)   starts filling the next layer's slot (overlaps this layer's compute)
class SequenceKv {
 public:
  virtual ~SequenceKv() = default;
  virtual int64_t num_layers() const = 0;
  virtual int64_t capacity_tokens() const = 0;
  // Every layer stays in backend memory (no transfers between passes): a one-token pass may be recorded.
  virtual bool AllOnDevice() const = 0;
  // Acquire returns paged layers (KvLayer::paged()).
  virtual bool paged() const = 0;
  // Paged: the pool slot (block * block_tokens + offset in the block) of the sequence's token `token`.
  virtual int32_t Slot(int64_t token) const {
    (void)token;
    return -1;
  }
  // The pass about to run appends `rows` tokens at `first_position` (before its first Acquire).
  virtual void BeginPass(int64_t first_position, int64_t rows) {
    (void)first_position;
    (void)rows;
  }
  virtual absl::StatusOr<KvLayer> Acquire(int64_t layer, int64_t valid_tokens) = 0;
  // Attention of the pass's rows q over `view` (what Acquire returned for `layer`, this pass's rows
  // written). Default: exact attention; KvCache with SparseDecode may read fewer keys.
  virtual absl::Status Attend(Backend& backend, int64_t layer, const Tensor& q, const KvLayer& view,
                              const AttentionParams& params, Tensor& out) {
    (void)layer;
    return backend.Attention(q, view, params, out);
  }
  virtual absl::Status Release(int64_t layer, int64_t first_token, int64_t rows) = 0;
  virtual absl::Status Prefetch(int64_t layer, int64_t valid_tokens) = 0;
  // Completes every write-back (SSD writes included). After it, each head's home holds every row.
  virtual absl::Status Finish() = 0;
};

// Not thread-safe; used by one engine thread. Every backend call goes to the backend it was created with.
class KvCache final : public SequenceKv {
 public:
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(Backend& backend, const KvShape& shape, ResidencyPlan plan,
                                                         const KvBudgets& budgets = {},
                                                         const SparseDecode& sparse = {});
  // Waits for the cache's transfers (their memory is released with it).
  ~KvCache() override;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  const KvShape& shape() const { return shape_; }
  const ResidencyPlan& plan() const { return plan_; }

  int64_t num_layers() const override { return shape_.num_layers; }
  int64_t capacity_tokens() const override { return shape_.capacity_tokens; }
  bool AllOnDevice() const override { return plan_.AllOnDevice(); }
  bool paged() const override { return false; }
  void BeginPass(int64_t first_position, int64_t rows) override;
  absl::StatusOr<KvLayer> Acquire(int64_t layer, int64_t valid_tokens) override;
  absl::Status Attend(Backend& backend, int64_t layer, const Tensor& q, const KvLayer& view,
                      const AttentionParams& params, Tensor& out) override;
  absl::Status Release(int64_t layer, int64_t first_token, int64_t rows) override;
  absl::Status Prefetch(int64_t layer, int64_t valid_tokens) override;
  absl::Status Finish() override;

  // Rows [first, first + rows) of one head's K (or V) to or from host memory `data` (rows * RowBytes).
  // For KV export and import; complete when they return. REQUIRES: Finish() since the last Release.
  absl::Status ReadRows(int64_t layer, int64_t head, KvPart part, int64_t first, int64_t rows, void* data);
  absl::Status WriteRows(int64_t layer, int64_t head, KvPart part, int64_t first, int64_t rows, const void* data);

  const KvTransferStats& stats() const { return stats_; }
  // A new SparseDecode::budget_tokens (0: exact decode). FailedPrecondition unless the cache was created
  // with sparse decode on and has layers that keep chunk bounds.
  absl::Status SetSparseBudget(int64_t budget_tokens);

 private:
  // Where one head's K and V live.
  struct Home {
    Tensor k, v;             // kDevice and kHost: [capacity, head_dim] views
    int64_t ssd_offset = 0;  // kSsd: K at ssd_offset, V at ssd_offset + RegionBytes()
  };
  // A staging slot: every head of one layer in backend memory, and host bounce space for its SSD heads.
  struct Slot {
    KvLayer layer;
    Tensor bounce;  // host, [2 * heads * region_rows, head_dim]: K region then V region per head
    int64_t holds_layer = -1;
    int64_t holds_from = 0;  // it holds rows [holds_from, holds_tokens) of each head
    int64_t holds_tokens = 0;
    Fence uploaded;  // the slot's content is in place (upload queue)
    Fence drained;   // its written rows have left for home (download queue)
  };
  struct PendingSsdWrite {
    int64_t slot, layer, first, rows;
    Fence downloaded;
  };

  KvCache(Backend& backend, const KvShape& shape, ResidencyPlan plan);
  int64_t RegionRows() const;  // rows of one K (or V) region on SSD: capacity rounded to the alignment
  int64_t RegionBytes() const { return RegionRows() * shape_.RowBytes(); }
  // The bounce rows of a layer's `ssd_ordinal`-th SSD head (counting only that layer's SSD heads).
  Tensor BounceRows(Slot& slot, int64_t ssd_ordinal, KvPart part) const;
  Tensor HeadRows(const KvLayer& layer, int64_t head, KvPart part) const;
  // Uploads rows [from, valid_tokens) of every head of `layer` into its slot.
  absl::Status Fill(int64_t layer, int64_t from, int64_t valid_tokens);
  // Sparse decode: whether `layer` keeps chunk bounds, whether this pass reads chosen keys only, and the
  // first row of the recent window that a step at `position` reads (a chunk boundary).
  bool SparseLayer(int64_t layer) const { return !bounds_.empty() && !bounds_[layer].empty(); }
  bool SparsePass() const { return pass_rows_ == 1 && sparse_.budget_tokens > 0; }
  int64_t FirstRowToFetch(int64_t layer, int64_t valid_tokens) const;
  int64_t NumChunks() const { return (shape_.capacity_tokens + sparse_.chunk_tokens - 1) / sparse_.chunk_tokens; }
  absl::Status FlushSsdWrites(int64_t keep_layer);

  Backend& backend_;
  KvShape shape_;
  ResidencyPlan plan_;
  std::vector<KvLayer> device_layers_;  // layers with every head in HBM (others: empty)
  std::vector<Home> homes_;             // [layer * heads + head]
  std::vector<Tensor> host_blocks_;     // owners of the host homes (one per layer that has any)
  std::vector<Tensor> device_blocks_;   // owners of the HBM homes of mixed layers
  std::unique_ptr<SsdFile> ssd_;
  Slot slots_[2];
  std::vector<PendingSsdWrite> pending_writes_;
  std::vector<std::pair<Fence, Fence>> stalls_;  // compute fences around each wait for an upload
  KvTransferStats stats_;
  SparseDecode sparse_;
  std::vector<Tensor> bounds_;  // per layer: [heads * NumChunks(), 2 * head_dim] (sparse layers only)
  KvLayer gathered_;            // the chosen keys of one layer (sparse decode)
  int64_t pass_rows_ = 0;
};

}  // namespace strata::engine

#endif  // STRATA_WORKER_ENGINE_KV_CACHE_H_
