#include "worker/engine/kv_cache.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "common/strings.h"

namespace strata::engine {
namespace {

// Adds the calling thread's time in scope to `seconds`.
class HostTimer {
 public:
  explicit HostTimer(double& seconds) : seconds_(seconds), start_(std::chrono::steady_clock::now()) {}
  ~HostTimer() { seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  double& seconds_;
  std::chrono::steady_clock::time_point start_;
};

// Rows of one K (or V) region on SSD: the capacity rounded up so that every region starts and ends
// on the direct-I/O alignment.
int64_t RegionRowsOf(const KvShape& shape) {
  const int64_t rows_per_granule = std::lcm(shape.RowBytes(), SsdFile::kAlignmentBytes) / shape.RowBytes();
  return (shape.capacity_tokens + rows_per_granule - 1) / rows_per_granule * rows_per_granule;
}

}  // namespace

std::string FormatGiB(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f GiB", static_cast<double>(bytes) / (int64_t{1} << 30));
  return text;
}

std::string_view KvTierName(KvTier tier) {
  switch (tier) {
    case KvTier::kDevice:
      return "device";
    case KvTier::kHost:
      return "host";
    case KvTier::kSsd:
      return "ssd";
  }
  return "?";
}

ResidencyPlan ResidencyPlan::Uniform(int64_t num_layers, int64_t num_kv_heads, KvTier tier) {
  ResidencyPlan plan;
  plan.num_layers_ = num_layers;
  plan.num_kv_heads_ = num_kv_heads;
  plan.tiers_.assign(num_layers * num_kv_heads, tier);
  return plan;
}

absl::StatusOr<ResidencyPlan> ResidencyPlan::FromTiers(int64_t num_layers, int64_t num_kv_heads,
                                                       std::vector<KvTier> tiers) {
  if (num_layers <= 0 || num_kv_heads <= 0 || static_cast<int64_t>(tiers.size()) != num_layers * num_kv_heads) {
    return absl::InvalidArgumentError(
        StrCat("residency plan: ", tiers.size(), " tiers for ", num_layers, " layers of ", num_kv_heads, " KV heads"));
  }
  ResidencyPlan plan;
  plan.num_layers_ = num_layers;
  plan.num_kv_heads_ = num_kv_heads;
  plan.tiers_ = std::move(tiers);
  return plan;
}

absl::StatusOr<ResidencyPlan> ResidencyPlan::FromBudgets(const KvShape& shape, const KvBudgets& budgets) {
  const int64_t heads = shape.num_layers * shape.num_kv_heads;
  const int64_t head_bytes = shape.HeadBytes();
  if (heads <= 0 || head_bytes <= 0) return absl::InvalidArgumentError("residency plan: empty KV shape");
  if (budgets.device_bytes == KvBudgets::kUnlimited || shape.TotalBytes() <= budgets.device_bytes) {
    return Uniform(shape.num_layers, shape.num_kv_heads, KvTier::kDevice);
  }
  // Offloading anything needs two staging slots of a whole layer in HBM.
  const int64_t staging = 2 * shape.num_kv_heads * head_bytes;
  if (budgets.device_bytes < staging) {
    return absl::ResourceExhaustedError(
        StrCat("KV of ", shape.capacity_tokens, " tokens (", FormatGiB(shape.TotalBytes()),
               ") does not fit the GPU KV budget of ", FormatGiB(budgets.device_bytes), ", and offloading it needs ",
               FormatGiB(staging), " of GPU memory for two staging layers: raise --gpu-kv-budget to at least ",
               FormatGiB(staging)));
  }
  const int64_t on_device = std::min(heads, (budgets.device_bytes - staging) / head_bytes);
  const int64_t rest = heads - on_device;
  int64_t on_host = rest;
  int64_t on_ssd = 0;
  if (rest * head_bytes > budgets.host_bytes) {
    // Some heads go to SSD; their reads and writes pass through host bounce buffers (two slots of a
    // whole layer's K and V regions, rounded to the direct-I/O alignment).
    const int64_t region = RegionRowsOf(shape) * shape.RowBytes();
    const int64_t bounce = 2 * 2 * shape.num_kv_heads * region;
    on_host = std::max<int64_t>(0, (budgets.host_bytes - bounce) / head_bytes);
    on_host = std::min(on_host, rest);
    on_ssd = rest - on_host;
    const int64_t ssd_needed = on_ssd * 2 * region;
    if (ssd_needed > budgets.ssd_bytes) {
      const int64_t host_short = rest * head_bytes - budgets.host_bytes;
      return absl::ResourceExhaustedError(
          StrCat("KV of ", shape.capacity_tokens, " tokens (", FormatGiB(shape.TotalBytes()),
                 ") does not fit: the GPU KV budget (", FormatGiB(budgets.device_bytes), ") holds ",
                 FormatGiB(on_device * head_bytes), ", the host KV budget (", FormatGiB(budgets.host_bytes), ") ",
                 FormatGiB(on_host * head_bytes), ", the SSD budget (", FormatGiB(budgets.ssd_bytes), ") needs ",
                 FormatGiB(ssd_needed), ": raise --ssd-budget by ", FormatGiB(ssd_needed - budgets.ssd_bytes),
                 " or --host-kv-budget by ", FormatGiB(host_short), " (or --gpu-kv-budget)"));
    }
    if (budgets.ssd_dir.empty()) {
      return absl::InvalidArgumentError(StrCat(on_ssd, " KV heads need the SSD tier, but no --ssd-dir is given"));
    }
  }
  std::vector<KvTier> tiers(heads, KvTier::kSsd);
  for (int64_t i = 0; i < on_device; ++i) tiers[i] = KvTier::kDevice;
  for (int64_t i = on_device; i < on_device + on_host; ++i) tiers[i] = KvTier::kHost;
  return FromTiers(shape.num_layers, shape.num_kv_heads, std::move(tiers));
}

bool ResidencyPlan::LayerOnDevice(int64_t layer) const {
  for (int64_t h = 0; h < num_kv_heads_; ++h) {
    if (tier(layer, h) != KvTier::kDevice) return false;
  }
  return true;
}

bool ResidencyPlan::AllOnDevice() const { return HeadsIn(KvTier::kDevice) == static_cast<int64_t>(tiers_.size()); }

int64_t ResidencyPlan::HeadsIn(KvTier tier) const { return std::count(tiers_.begin(), tiers_.end(), tier); }

namespace {
// The most SSD heads in any one layer: the bounce buffers hold that many.
int64_t MaxSsdHeadsPerLayer(const ResidencyPlan& plan) {
  int64_t most = 0;
  for (int64_t l = 0; l < plan.num_layers(); ++l) {
    int64_t n = 0;
    for (int64_t h = 0; h < plan.num_kv_heads(); ++h) n += plan.tier(l, h) == KvTier::kSsd;
    most = std::max(most, n);
  }
  return most;
}
}  // namespace

KvMemory ResidencyPlan::Memory(const KvShape& shape) const {
  KvMemory m;
  const int64_t region_bytes = RegionRowsOf(shape) * shape.RowBytes();
  m.device_bytes = HeadsIn(KvTier::kDevice) * shape.HeadBytes();
  if (!AllOnDevice()) m.device_bytes += 2 * num_kv_heads_ * shape.HeadBytes();
  m.host_bytes = HeadsIn(KvTier::kHost) * shape.HeadBytes() + 2 * 2 * MaxSsdHeadsPerLayer(*this) * region_bytes;
  m.ssd_bytes = HeadsIn(KvTier::kSsd) * 2 * region_bytes;
  return m;
}

std::string ResidencyPlan::ToString() const {
  std::string text;
  for (int64_t l = 0; l < num_layers_; ++l) {
    if (l > 0) text += " / ";
    for (int64_t h = 0; h < num_kv_heads_; ++h) {
      if (h > 0) text += ' ';
      text += "GHS"[static_cast<int>(tier(l, h))];
    }
  }
  return text;
}

namespace {
// Layers whose heads are all in HBM or pinned host memory, with at least one in host memory: the layers
// sparse decode serves (SSD heads are read whole).
bool SparseEligible(const ResidencyPlan& plan, int64_t layer) {
  bool any_host = false;
  for (int64_t h = 0; h < plan.num_kv_heads(); ++h) {
    if (plan.tier(layer, h) == KvTier::kSsd) return false;
    any_host |= plan.tier(layer, h) == KvTier::kHost;
  }
  return any_host;
}
}  // namespace

absl::Status SparseDecode::Validate() const {
  if (budget_tokens < 0 || chunk_tokens <= 0 || sink_tokens < 0 || recent_tokens <= 0) {
    return absl::InvalidArgumentError(StrCat("sparse decode: budget ", budget_tokens, " tokens, chunks of ",
                                             chunk_tokens, ", ", sink_tokens, " sink and ", recent_tokens,
                                             " recent tokens (need budget >= 0, chunks and window > 0, sinks >= 0)"));
  }
  return absl::OkStatus();
}

int64_t SparseDecode::GatherRows(int64_t capacity_tokens) const {
  const int64_t sink_rows = (sink_tokens + chunk_tokens - 1) / chunk_tokens * chunk_tokens;
  return std::min(capacity_tokens, std::max(budget_tokens, sink_rows + recent_tokens + chunk_tokens));
}

int64_t SparseDecode::TailFirst(int64_t position) const {
  const int64_t first = position + 1 - recent_tokens;
  return first <= 0 ? 0 : first / chunk_tokens * chunk_tokens;
}

SparseGather SparseDecode::Layout(int64_t position, int64_t capacity_tokens) const {
  SparseGather gather;
  const int64_t chunk = chunk_tokens, tail_first = TailFirst(position);
  gather.chunk_tokens = chunk;
  gather.num_chunks = (capacity_tokens + chunk - 1) / chunk;
  gather.candidates = tail_first / chunk;
  gather.sink_chunks = std::min(gather.candidates, (sink_tokens + chunk - 1) / chunk);
  gather.tail_rows = position + 1 - tail_first;
  const int64_t budget_chunks = std::max<int64_t>(0, budget_tokens - gather.tail_rows) / chunk;
  gather.select = std::min(gather.candidates, std::max(gather.sink_chunks, budget_chunks));
  return gather;
}

int64_t SparseDecode::DeviceBytes(const KvShape& shape, const ResidencyPlan& plan) const {
  if (!enabled()) return 0;
  int64_t layers = 0;
  for (int64_t l = 0; l < plan.num_layers(); ++l) layers += SparseEligible(plan, l);
  if (layers == 0) return 0;
  const int64_t chunks = (shape.capacity_tokens + chunk_tokens - 1) / chunk_tokens;
  return layers * shape.num_kv_heads * chunks * 2 * shape.RowBytes() +
         2 * shape.num_kv_heads * GatherRows(shape.capacity_tokens) * shape.RowBytes();
}

KvCache::KvCache(Backend& backend, const KvShape& shape, ResidencyPlan plan)
    : backend_(backend), shape_(shape), plan_(std::move(plan)) {}

int64_t KvCache::RegionRows() const { return RegionRowsOf(shape_); }

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(Backend& backend, const KvShape& shape, ResidencyPlan plan,
                                                         const KvBudgets& budgets, const SparseDecode& sparse) {
  STRATA_RETURN_IF_ERROR(sparse.Validate());
  if (plan.num_layers() != shape.num_layers || plan.num_kv_heads() != shape.num_kv_heads) {
    return absl::InvalidArgumentError(StrCat("KV cache: a plan for ", plan.num_layers(), "x", plan.num_kv_heads(),
                                             " heads does not fit ", shape.num_layers, "x", shape.num_kv_heads));
  }
  if (shape.capacity_tokens <= 0 || shape.head_dim <= 0) {
    return absl::InvalidArgumentError(
        StrCat("KV cache: capacity ", shape.capacity_tokens, " tokens of width ", shape.head_dim));
  }
  std::unique_ptr<KvCache> cache(new KvCache(backend, shape, std::move(plan)));
  const ResidencyPlan& p = cache->plan_;
  const int64_t heads = shape.num_kv_heads, capacity = shape.capacity_tokens, width = shape.head_dim;
  const int64_t ssd_heads = p.HeadsIn(KvTier::kSsd);
  if (ssd_heads > 0) {
    STRATA_ASSIGN_OR_RETURN(cache->ssd_,
                            SsdFile::Create(budgets.ssd_dir, ssd_heads * 2 * cache->RegionBytes(), budgets.ssd_io));
  }
  cache->device_layers_.resize(shape.num_layers);
  cache->homes_.resize(shape.num_layers * heads);
  int64_t ssd_offset = 0;
  for (int64_t l = 0; l < shape.num_layers; ++l) {
    if (p.LayerOnDevice(l)) {
      KvLayer& layer = cache->device_layers_[l];
      layer.num_kv_heads = heads;
      layer.capacity_tokens = capacity;
      STRATA_ASSIGN_OR_RETURN(layer.k, backend.Allocate(shape.dtype, heads * capacity, width));
      STRATA_ASSIGN_OR_RETURN(layer.v, backend.Allocate(shape.dtype, heads * capacity, width));
      for (int64_t h = 0; h < heads; ++h) {
        cache->homes_[l * heads + h] = Home{layer.k.Rows(h * capacity, capacity), layer.v.Rows(h * capacity, capacity)};
      }
      continue;
    }
    // A mixed or offloaded layer: one block per tier for its HBM and host heads, regions of the file.
    for (KvTier tier : {KvTier::kDevice, KvTier::kHost}) {
      int64_t n = 0;
      for (int64_t h = 0; h < heads; ++h) n += p.tier(l, h) == tier;
      if (n == 0) continue;
      Tensor k, v;
      if (tier == KvTier::kDevice) {
        STRATA_ASSIGN_OR_RETURN(k, backend.Allocate(shape.dtype, n * capacity, width));
        STRATA_ASSIGN_OR_RETURN(v, backend.Allocate(shape.dtype, n * capacity, width));
      } else {
        STRATA_ASSIGN_OR_RETURN(k, backend.AllocateHost(shape.dtype, n * capacity, width));
        STRATA_ASSIGN_OR_RETURN(v, backend.AllocateHost(shape.dtype, n * capacity, width));
      }
      int64_t i = 0;
      for (int64_t h = 0; h < heads; ++h) {
        if (p.tier(l, h) != tier) continue;
        cache->homes_[l * heads + h] = Home{k.Rows(i * capacity, capacity), v.Rows(i * capacity, capacity)};
        ++i;
      }
      (tier == KvTier::kDevice ? cache->device_blocks_ : cache->host_blocks_).push_back(k);
      (tier == KvTier::kDevice ? cache->device_blocks_ : cache->host_blocks_).push_back(v);
    }
    for (int64_t h = 0; h < heads; ++h) {
      if (p.tier(l, h) != KvTier::kSsd) continue;
      cache->homes_[l * heads + h].ssd_offset = ssd_offset;
      ssd_offset += 2 * cache->RegionBytes();
    }
  }
  if (!p.AllOnDevice()) {
    const int64_t bounce_heads = MaxSsdHeadsPerLayer(p);
    for (Slot& slot : cache->slots_) {
      slot.layer.num_kv_heads = heads;
      slot.layer.capacity_tokens = capacity;
      STRATA_ASSIGN_OR_RETURN(slot.layer.k, backend.Allocate(shape.dtype, heads * capacity, width));
      STRATA_ASSIGN_OR_RETURN(slot.layer.v, backend.Allocate(shape.dtype, heads * capacity, width));
      if (bounce_heads > 0) {
        STRATA_ASSIGN_OR_RETURN(slot.bounce,
                                backend.AllocateHost(shape.dtype, 2 * bounce_heads * cache->RegionRows(), width));
      }
    }
  }
  if (sparse.DeviceBytes(shape, p) > 0) {
    cache->sparse_ = sparse;
    cache->bounds_.resize(shape.num_layers);
    for (int64_t l = 0; l < shape.num_layers; ++l) {
      if (!SparseEligible(p, l)) continue;
      STRATA_ASSIGN_OR_RETURN(cache->bounds_[l], backend.Allocate(shape.dtype, heads * cache->NumChunks(), 2 * width));
    }
    KvLayer& gathered = cache->gathered_;
    gathered.num_kv_heads = heads;
    gathered.capacity_tokens = sparse.GatherRows(capacity);
    STRATA_ASSIGN_OR_RETURN(gathered.k, backend.Allocate(shape.dtype, heads * gathered.capacity_tokens, width));
    STRATA_ASSIGN_OR_RETURN(gathered.v, backend.Allocate(shape.dtype, heads * gathered.capacity_tokens, width));
  }
  return cache;
}

KvCache::~KvCache() {
  (void)Finish();
  for (Slot& slot : slots_) (void)backend_.Synchronize(slot.uploaded);
}

Tensor KvCache::HeadRows(const KvLayer& layer, int64_t head, KvPart part) const {
  return (part == KvPart::kValue ? layer.v : layer.k).Rows(head * shape_.capacity_tokens, shape_.capacity_tokens);
}

Tensor KvCache::BounceRows(Slot& slot, int64_t ssd_ordinal, KvPart part) const {
  return slot.bounce.Rows((2 * ssd_ordinal + (part == KvPart::kValue ? 1 : 0)) * RegionRows(), RegionRows());
}

absl::Status KvCache::Fill(int64_t layer, int64_t from, int64_t valid_tokens) {
  Slot& slot = slots_[layer % 2];
  STRATA_RETURN_IF_ERROR(FlushSsdWrites(layer % 2));
  // The bounce buffer is about to be overwritten: its previous upload must be done with it.
  if (!slot.bounce.empty()) STRATA_RETURN_IF_ERROR(backend_.Synchronize(slot.uploaded));
  STRATA_RETURN_IF_ERROR(backend_.Wait(Queue::kUpload, slot.drained));
  const int64_t heads = shape_.num_kv_heads;
  int64_t ssd_ordinal = 0;
  for (int64_t h = 0; h < heads && valid_tokens > from; ++h) {
    const Home& home = homes_[layer * heads + h];
    for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
      Tensor dst = HeadRows(slot.layer, h, part);
      if (plan_.tier(layer, h) == KvTier::kSsd) {
        STRATA_CHECK(from == 0);  // layers with SSD heads are never sparse
        Tensor bounce = BounceRows(slot, ssd_ordinal, part);
        const int64_t bytes = (valid_tokens * shape_.RowBytes() + SsdFile::kAlignmentBytes - 1) /
                              SsdFile::kAlignmentBytes * SsdFile::kAlignmentBytes;
        {
          HostTimer read_timer(stats_.ssd_read_s);
          STRATA_RETURN_IF_ERROR(
              ssd_->ReadDirect(home.ssd_offset + (part == KvPart::kValue ? RegionBytes() : 0), bytes, bounce.data()));
        }
        stats_.ssd_bytes_read += bytes;
        STRATA_RETURN_IF_ERROR(backend_.CopyRows(bounce, 0, dst, 0, valid_tokens, Queue::kUpload));
      } else {
        STRATA_RETURN_IF_ERROR(backend_.CopyRows(part == KvPart::kValue ? home.v : home.k, from, dst, from,
                                                 valid_tokens - from, Queue::kUpload));
      }
      stats_.bytes_uploaded += (valid_tokens - from) * shape_.RowBytes();
    }
    ssd_ordinal += plan_.tier(layer, h) == KvTier::kSsd;
  }
  STRATA_ASSIGN_OR_RETURN(slot.uploaded, backend_.Record(Queue::kUpload));
  slot.holds_layer = layer;
  slot.holds_from = from;
  slot.holds_tokens = valid_tokens;
  return absl::OkStatus();
}

absl::Status KvCache::SetSparseBudget(int64_t budget_tokens) {
  if (bounds_.empty()) {
    return absl::FailedPreconditionError(
        "sparse decode: this sequence keeps no chunk bounds (created without sparse decode, or no layer is offloaded)");
  }
  if (budget_tokens < 0) return absl::InvalidArgumentError(StrCat("sparse decode: a budget of ", budget_tokens));
  SparseDecode next = sparse_;
  next.budget_tokens = budget_tokens;
  // A larger budget gathers more keys: the buffer they land in grows with it (it never shrinks).
  const int64_t rows = next.GatherRows(shape_.capacity_tokens);
  if (rows > gathered_.capacity_tokens) {
    const int64_t heads = shape_.num_kv_heads;
    STRATA_ASSIGN_OR_RETURN(Tensor k, backend_.Allocate(shape_.dtype, heads * rows, shape_.head_dim));
    STRATA_ASSIGN_OR_RETURN(Tensor v, backend_.Allocate(shape_.dtype, heads * rows, shape_.head_dim));
    gathered_.k = std::move(k);
    gathered_.v = std::move(v);
    gathered_.capacity_tokens = rows;
  }
  sparse_ = next;
  return absl::OkStatus();
}

void KvCache::BeginPass(int64_t first_position, int64_t rows) {
  (void)first_position;
  pass_rows_ = rows;
}


int64_t KvCache::FirstRowToFetch(int64_t layer, int64_t valid_tokens) const {
  // A sparse step reads the recent window from the slot and everything else from home.
  return SparsePass() && SparseLayer(layer) ? std::min(sparse_.TailFirst(valid_tokens), valid_tokens) : 0;
}

absl::Status KvCache::Prefetch(int64_t layer, int64_t valid_tokens) {
  if (layer < 0 || layer >= shape_.num_layers || plan_.LayerOnDevice(layer)) return absl::OkStatus();
  const Slot& slot = slots_[layer % 2];
  const int64_t from = FirstRowToFetch(layer, valid_tokens);
  if (slot.holds_layer == layer && slot.holds_tokens == valid_tokens && slot.holds_from <= from) {
    return absl::OkStatus();
  }
  HostTimer timer(stats_.host_transfer_s);
  return Fill(layer, from, valid_tokens);
}

absl::StatusOr<KvLayer> KvCache::Acquire(int64_t layer, int64_t valid_tokens) {
  if (layer < 0 || layer >= shape_.num_layers) {
    return absl::OutOfRangeError(StrCat("KV cache: layer ", layer, " of ", shape_.num_layers));
  }
  if (plan_.LayerOnDevice(layer)) return device_layers_[layer];
  Slot& slot = slots_[layer % 2];
  {
    HostTimer timer(stats_.host_transfer_s);
    const int64_t from = FirstRowToFetch(layer, valid_tokens);
    if (slot.holds_layer != layer || slot.holds_tokens != valid_tokens || slot.holds_from > from) {
      STRATA_RETURN_IF_ERROR(Fill(layer, from, valid_tokens));
    }
  }
  STRATA_ASSIGN_OR_RETURN(Fence before, backend_.Record(Queue::kCompute));
  STRATA_RETURN_IF_ERROR(backend_.Wait(Queue::kCompute, slot.uploaded));
  STRATA_ASSIGN_OR_RETURN(Fence after, backend_.Record(Queue::kCompute));
  stalls_.push_back({std::move(before), std::move(after)});
  return slot.layer;
}

absl::Status KvCache::Release(int64_t layer, int64_t first_token, int64_t rows) {
  if (layer < 0 || layer >= shape_.num_layers || plan_.LayerOnDevice(layer) || rows <= 0) return absl::OkStatus();
  const int slot_index = static_cast<int>(layer % 2);
  Slot& slot = slots_[slot_index];
  if (slot.holds_layer != layer) {
    return absl::FailedPreconditionError(StrCat("KV cache: layer ", layer, " released without being acquired"));
  }
  HostTimer timer(stats_.host_transfer_s);
  // The new keys' chunk bounds, from the slot before it is reused (ordered before `computed`).
  if (SparseLayer(layer)) {
    STRATA_RETURN_IF_ERROR(backend_.UpdateKeyBounds(slot.layer, first_token, rows, sparse_.chunk_tokens, bounds_[layer]));
  }
  STRATA_ASSIGN_OR_RETURN(Fence computed, backend_.Record(Queue::kCompute));
  STRATA_RETURN_IF_ERROR(backend_.Wait(Queue::kDownload, computed));
  const int64_t heads = shape_.num_kv_heads;
  int64_t ssd_ordinal = 0;
  bool any_ssd = false;
  for (int64_t h = 0; h < heads; ++h) {
    Home& home = homes_[layer * heads + h];
    const bool on_ssd = plan_.tier(layer, h) == KvTier::kSsd;
    for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
      const Tensor src = HeadRows(slot.layer, h, part);
      Tensor dst = on_ssd ? BounceRows(slot, ssd_ordinal, part) : (part == KvPart::kValue ? home.v : home.k);
      STRATA_RETURN_IF_ERROR(backend_.CopyRows(src, first_token, dst, first_token, rows, Queue::kDownload));
      stats_.bytes_downloaded += rows * shape_.RowBytes();
    }
    ssd_ordinal += on_ssd;
    any_ssd |= on_ssd;
  }
  STRATA_ASSIGN_OR_RETURN(slot.drained, backend_.Record(Queue::kDownload));
  if (any_ssd) pending_writes_.push_back({slot_index, layer, first_token, rows, slot.drained});
  slot.holds_tokens = first_token + rows;  // the slot now mirrors the home up to here
  return absl::OkStatus();
}

absl::Status KvCache::Attend(Backend& backend, int64_t layer, const Tensor& q, const KvLayer& view,
                             const AttentionParams& params, Tensor& out) {
  if (!SparsePass() || q.rows() != 1 || !SparseLayer(layer) || params.window > 0) {
    return backend.Attention(q, view, params, out);
  }
  const int64_t position = params.first_position, chunk = sparse_.chunk_tokens, heads = shape_.num_kv_heads;
  SparseGather gather = sparse_.Layout(position, shape_.capacity_tokens);
  const int64_t tail_first = position + 1 - gather.tail_rows;
  int64_t host_heads = 0;
  for (int64_t h = 0; h < heads; ++h) {
    const Home& home = homes_[layer * heads + h];
    gather.k_homes.push_back(home.k);
    gather.v_homes.push_back(home.v);
    gather.k_tail.push_back(HeadRows(view, h, KvPart::kKey).Rows(tail_first, gather.tail_rows));
    gather.v_tail.push_back(HeadRows(view, h, KvPart::kValue).Rows(tail_first, gather.tail_rows));
    host_heads += plan_.tier(layer, h) == KvTier::kHost;
  }
  // Rows that earlier steps sent home must be there before the gather reads them.
  for (const Slot& slot : slots_) STRATA_RETURN_IF_ERROR(backend.Wait(Queue::kCompute, slot.drained));
  STRATA_RETURN_IF_ERROR(backend.GatherImportantKv(q, bounds_[layer], gather, params, gathered_));
  AttentionParams chosen = params;
  chosen.first_position = gather.select * chunk + gather.tail_rows - 1;  // the query sees every chosen key
  STRATA_RETURN_IF_ERROR(backend.Attention(q, gathered_, chosen, out));
  stats_.bytes_uploaded += 2 * host_heads * gather.select * chunk * shape_.RowBytes();
  ++stats_.sparse_attentions;
  stats_.approximate_attentions += gather.select < gather.candidates;
  return absl::OkStatus();
}

absl::Status KvCache::FlushSsdWrites(int64_t slot_index) {
  std::vector<PendingSsdWrite> keep;
  for (PendingSsdWrite& write : pending_writes_) {
    if (slot_index >= 0 && write.slot != slot_index) {
      keep.push_back(std::move(write));
      continue;
    }
    STRATA_RETURN_IF_ERROR(backend_.Synchronize(write.downloaded));
    Slot& slot = slots_[write.slot];
    const int64_t heads = shape_.num_kv_heads, row_bytes = shape_.RowBytes();
    int64_t ssd_ordinal = 0;
    for (int64_t h = 0; h < heads; ++h) {
      if (plan_.tier(write.layer, h) != KvTier::kSsd) continue;
      const Home& home = homes_[write.layer * heads + h];
      for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
        const Tensor bounce = BounceRows(slot, ssd_ordinal, part);
        STRATA_RETURN_IF_ERROR(ssd_->Write(
            home.ssd_offset + (part == KvPart::kValue ? RegionBytes() : 0) + write.first * row_bytes,
            static_cast<const std::byte*>(bounce.data()) + write.first * row_bytes, write.rows * row_bytes));
        stats_.ssd_bytes_written += write.rows * row_bytes;
      }
      ++ssd_ordinal;
    }
  }
  pending_writes_ = std::move(keep);
  return absl::OkStatus();
}

absl::Status KvCache::Finish() {
  HostTimer timer(stats_.host_transfer_s);
  STRATA_RETURN_IF_ERROR(FlushSsdWrites(-1));
  for (Slot& slot : slots_) STRATA_RETURN_IF_ERROR(backend_.Synchronize(slot.drained));
  for (auto& [before, after] : stalls_) {
    STRATA_RETURN_IF_ERROR(backend_.Synchronize(after));
    STRATA_ASSIGN_OR_RETURN(const double seconds, backend_.ElapsedSeconds(before, after));
    stats_.compute_stall_s += seconds;
  }
  stalls_.clear();
  return absl::OkStatus();
}

absl::Status KvCache::ReadRows(int64_t layer, int64_t head, KvPart part, int64_t first, int64_t rows, void* data) {
  if (layer < 0 || layer >= shape_.num_layers || head < 0 || head >= shape_.num_kv_heads || first < 0 || rows < 0 ||
      first + rows > shape_.capacity_tokens) {
    return absl::OutOfRangeError(
        StrCat("KV cache: rows [", first, ", ", first + rows, ") of layer ", layer, " head ", head));
  }
  const Home& home = homes_[layer * shape_.num_kv_heads + head];
  if (plan_.tier(layer, head) == KvTier::kSsd) {
    return ssd_->Read(home.ssd_offset + (part == KvPart::kValue ? RegionBytes() : 0) + first * shape_.RowBytes(),
                      rows * shape_.RowBytes(), data);
  }
  Tensor out(shape_.dtype, rows, shape_.head_dim, data, nullptr);
  STRATA_ASSIGN_OR_RETURN(Fence computed, backend_.Record(Queue::kCompute));
  STRATA_RETURN_IF_ERROR(backend_.Wait(Queue::kDownload, computed));
  STRATA_RETURN_IF_ERROR(
      backend_.CopyRows(part == KvPart::kValue ? home.v : home.k, first, out, 0, rows, Queue::kDownload));
  STRATA_ASSIGN_OR_RETURN(Fence copied, backend_.Record(Queue::kDownload));
  return backend_.Synchronize(copied);
}

absl::Status KvCache::WriteRows(int64_t layer, int64_t head, KvPart part, int64_t first, int64_t rows,
                                const void* data) {
  if (layer < 0 || layer >= shape_.num_layers || head < 0 || head >= shape_.num_kv_heads || first < 0 || rows < 0 ||
      first + rows > shape_.capacity_tokens) {
    return absl::OutOfRangeError(
        StrCat("KV cache: rows [", first, ", ", first + rows, ") of layer ", layer, " head ", head));
  }
  for (Slot& slot : slots_) {
    if (slot.holds_layer == layer) slot.holds_layer = -1;  // its copy is stale now
  }
  Home& home = homes_[layer * shape_.num_kv_heads + head];
  if (plan_.tier(layer, head) == KvTier::kSsd) {
    return ssd_->Write(home.ssd_offset + (part == KvPart::kValue ? RegionBytes() : 0) + first * shape_.RowBytes(), data,
                       rows * shape_.RowBytes());
  }
  const Tensor in(shape_.dtype, rows, shape_.head_dim, const_cast<void*>(data), nullptr);
  Tensor dst = part == KvPart::kValue ? home.v : home.k;
  // Ordered after compute that may still read the rows' old values, and before compute that reads them.
  STRATA_ASSIGN_OR_RETURN(Fence computed, backend_.Record(Queue::kCompute));
  STRATA_RETURN_IF_ERROR(backend_.Wait(Queue::kUpload, computed));
  STRATA_RETURN_IF_ERROR(backend_.CopyRows(in, 0, dst, first, rows, Queue::kUpload));
  STRATA_ASSIGN_OR_RETURN(Fence copied, backend_.Record(Queue::kUpload));
  STRATA_RETURN_IF_ERROR(backend_.Wait(Queue::kCompute, copied));
  if (part == KvPart::kKey && SparseLayer(layer)) {  // the imported keys' chunk bounds, read from their home
    const KvLayer one_head{.k = dst, .v = home.v, .num_kv_heads = 1, .capacity_tokens = shape_.capacity_tokens};
    Tensor head_bounds = bounds_[layer].Rows(head * NumChunks(), NumChunks());
    STRATA_RETURN_IF_ERROR(backend_.UpdateKeyBounds(one_head, first, rows, sparse_.chunk_tokens, head_bounds));
  }
  return backend_.Synchronize(copied);
}

}  // namespace strata::engine
