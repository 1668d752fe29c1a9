#include "worker/engine/llama.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/strings.h"
#include "worker/engine/rope.h"
#include "model/weight_layout.h"

namespace strata::engine {
namespace {

// Passes of at least this many tokens log each layer as it completes (a 1M-token prefill runs for minutes).
constexpr int64_t kProgressLogTokens = 65536;

// Scratch activations of one mini-sequence of up to `rows` tokens, reused across layers.
struct Scratch {
  Tensor normed, q, k, v, attn, projected, gate, up;

  static absl::StatusOr<Scratch> Allocate(Backend& backend, const model::ModelConfig& c, int64_t rows) {
    const DType dtype = backend.activation_dtype();
    Scratch s;
    STRATA_ASSIGN_OR_RETURN(s.normed, backend.Allocate(dtype, rows, c.hidden_size));
    STRATA_ASSIGN_OR_RETURN(s.q, backend.Allocate(dtype, rows, c.q_dim()));
    STRATA_ASSIGN_OR_RETURN(s.k, backend.Allocate(dtype, rows, c.kv_dim()));
    STRATA_ASSIGN_OR_RETURN(s.v, backend.Allocate(dtype, rows, c.kv_dim()));
    STRATA_ASSIGN_OR_RETURN(s.attn, backend.Allocate(dtype, rows, c.q_dim()));
    STRATA_ASSIGN_OR_RETURN(s.projected, backend.Allocate(dtype, rows, c.hidden_size));
    STRATA_ASSIGN_OR_RETURN(s.gate, backend.Allocate(dtype, rows, c.intermediate_size));
    STRATA_ASSIGN_OR_RETURN(s.up, backend.Allocate(dtype, rows, c.intermediate_size));
    return s;
  }

  // The first `rows` rows of every buffer.
  Scratch Prefix(int64_t rows) const {
    return Scratch{normed.Rows(0, rows), q.Rows(0, rows),         k.Rows(0, rows),    v.Rows(0, rows),
                   attn.Rows(0, rows),   projected.Rows(0, rows), gate.Rows(0, rows), up.Rows(0, rows)};
  }
};

// Brackets a decode step with Backend::BeginStep/EndStep; abandons the step if End is never reached.
class StepScope {
 public:
  StepScope(Backend& backend, bool active) : backend_(backend), active_(active) {}
  StepScope(const StepScope&) = delete;
  StepScope& operator=(const StepScope&) = delete;
  ~StepScope() {
    if (open_) backend_.AbortStep();
  }
  absl::Status Begin() {
    if (!active_) return absl::OkStatus();
    STRATA_RETURN_IF_ERROR(backend_.BeginStep());
    open_ = true;
    return absl::OkStatus();
  }
  absl::Status End() {
    if (!open_) return absl::OkStatus();
    open_ = false;
    return backend_.EndStep();
  }

 private:
  Backend& backend_;
  bool active_;
  bool open_ = false;
};

// The leading run of paged segments with one new token each (decodes), when there is one: their
// block tables padded to one width and their positions, in backend memory, for Backend::DecodeAttention.
struct DecodeGroup {
  int64_t size = 0;  // segments [0, size), which are rows [0, size)
  int64_t table_stride = 0;
  Indices tables, positions;

  static absl::StatusOr<DecodeGroup> Make(Backend& backend, absl::Span<const LlamaModel::Segment> segments) {
    DecodeGroup group;
    int64_t size = 0;
    std::vector<KvLayer> views;
    while (size < static_cast<int64_t>(segments.size()) && segments[size].kv->paged() &&
           segments[size].ids.size() == 1) {
      STRATA_ASSIGN_OR_RETURN(KvLayer view, segments[size].kv->Acquire(0, segments[size].first_position));
      group.table_stride = std::max(group.table_stride, view.block_table.size);
      views.push_back(std::move(view));
      ++size;
    }
    if (size == 0) return DecodeGroup();
    std::vector<int32_t> tables(size * group.table_stride, 0), positions(size);
    for (int64_t b = 0; b < size; ++b) {
      for (int64_t i = 0; i < views[b].block_table.size; ++i) tables[b * group.table_stride + i] = views[b].block_table[i];
      positions[b] = static_cast<int32_t>(segments[b].first_position);
    }
    STRATA_ASSIGN_OR_RETURN(group.tables, backend.UploadIndices(std::move(tables)));
    STRATA_ASSIGN_OR_RETURN(group.positions, backend.UploadIndices(std::move(positions)));
    group.size = size;
    return group;
  }
};

class WeightBinder {
 public:
  WeightBinder(const model::Checkpoint& checkpoint, Backend& backend) : checkpoint_(checkpoint), backend_(backend) {}

  // Vectors load as [1, n]; matrices as stored, [out, in].
  absl::StatusOr<Tensor> Bind(const std::string& name) {
    const model::TensorInfo* info = checkpoint_.Find(name);
    if (info == nullptr) return absl::NotFoundError(StrCat("tensor '", name, "' is missing"));
    STRATA_CHECK(info->shape.size() == 1 || info->shape.size() == 2);  // CheckTensors has seen every shape
    const int64_t rows = info->shape.size() == 2 ? info->shape[0] : 1;
    const int64_t cols = info->shape.back();
    return backend_.LoadWeight(*info, rows, cols);
  }

  absl::StatusOr<Tensor> BindIf(bool present, const std::string& name) {
    if (!present) return Tensor();
    return Bind(name);
  }

 private:
  const model::Checkpoint& checkpoint_;
  Backend& backend_;
};

}  // namespace

absl::StatusOr<LlamaModel> LlamaModel::Load(const model::ModelConfig& config, const model::Checkpoint& checkpoint,
                                            Backend& backend) {
  LlamaModel m;
  m.config_ = config;
  WeightBinder bind(checkpoint, backend);
  STRATA_ASSIGN_OR_RETURN(m.embed_, bind.Bind(model::kEmbedTokens));
  STRATA_ASSIGN_OR_RETURN(m.final_norm_, bind.Bind(model::kFinalNorm));
  if (config.tie_word_embeddings) {
    m.lm_head_ = m.embed_;
  } else {
    STRATA_ASSIGN_OR_RETURN(m.lm_head_, bind.Bind(model::kLmHead));
  }
  const std::vector<float> inv_freq = RopeInverseFrequencies(config.rope, config.head_dim);
  STRATA_ASSIGN_OR_RETURN(m.rope_inv_freq_, backend.Upload(inv_freq, 1, static_cast<int64_t>(inv_freq.size())));
  for (int64_t i = 0; i < config.num_layers; ++i) {
    const model::LayerTensorNames n = model::LayerNames(i);
    LlamaLayerWeights w;
    STRATA_ASSIGN_OR_RETURN(w.attn_norm, bind.Bind(n.attn_norm));
    STRATA_ASSIGN_OR_RETURN(w.q, bind.Bind(n.q));
    STRATA_ASSIGN_OR_RETURN(w.k, bind.Bind(n.k));
    STRATA_ASSIGN_OR_RETURN(w.v, bind.Bind(n.v));
    STRATA_ASSIGN_OR_RETURN(w.o, bind.Bind(n.o));
    STRATA_ASSIGN_OR_RETURN(w.q_bias, bind.BindIf(config.qkv_bias, n.q_bias));
    STRATA_ASSIGN_OR_RETURN(w.k_bias, bind.BindIf(config.qkv_bias, n.k_bias));
    STRATA_ASSIGN_OR_RETURN(w.v_bias, bind.BindIf(config.qkv_bias, n.v_bias));
    STRATA_ASSIGN_OR_RETURN(w.o_bias, bind.BindIf(config.o_bias, n.o_bias));
    STRATA_ASSIGN_OR_RETURN(w.mlp_norm, bind.Bind(n.mlp_norm));
    STRATA_ASSIGN_OR_RETURN(w.gate, bind.Bind(n.gate));
    STRATA_ASSIGN_OR_RETURN(w.up, bind.Bind(n.up));
    STRATA_ASSIGN_OR_RETURN(w.down, bind.Bind(n.down));
    STRATA_ASSIGN_OR_RETURN(w.gate_bias, bind.BindIf(config.mlp_bias, n.gate_bias));
    STRATA_ASSIGN_OR_RETURN(w.up_bias, bind.BindIf(config.mlp_bias, n.up_bias));
    STRATA_ASSIGN_OR_RETURN(w.down_bias, bind.BindIf(config.mlp_bias, n.down_bias));
    m.layers_.push_back(std::move(w));
  }
  return m;
}

absl::StatusOr<LlamaModel> LlamaModel::FromWeights(const model::ModelConfig& config, Tensor embed, Tensor final_norm,
                                                   Tensor lm_head, std::vector<LlamaLayerWeights> layers,
                                                   Backend& backend) {
  if (static_cast<int64_t>(layers.size()) != config.num_layers ||
      static_cast<int64_t>(config.layer_window.size()) != config.num_layers) {
    return absl::InvalidArgumentError(StrCat("FromWeights: ", layers.size(), " layers and ", config.layer_window.size(),
                                             " windows for a ", config.num_layers, "-layer config"));
  }
  LlamaModel m;
  m.config_ = config;
  m.embed_ = std::move(embed);
  m.final_norm_ = std::move(final_norm);
  m.lm_head_ = std::move(lm_head);
  m.layers_ = std::move(layers);
  const std::vector<float> inv_freq = RopeInverseFrequencies(config.rope, config.head_dim);
  STRATA_ASSIGN_OR_RETURN(m.rope_inv_freq_, backend.Upload(inv_freq, 1, static_cast<int64_t>(inv_freq.size())));
  return m;
}

int64_t LlamaModel::WeightBytes() const {
  int64_t total = static_cast<int64_t>(embed_.bytes() + final_norm_.bytes());
  if (lm_head_.data() != embed_.data()) total += static_cast<int64_t>(lm_head_.bytes());
  for (const LlamaLayerWeights& w : layers_) {
    for (const Tensor* t : {&w.attn_norm, &w.q, &w.k, &w.v, &w.o, &w.q_bias, &w.k_bias, &w.v_bias, &w.o_bias,
                            &w.mlp_norm, &w.gate, &w.up, &w.down, &w.gate_bias, &w.up_bias, &w.down_bias}) {
      total += static_cast<int64_t>(t->bytes());
    }
  }
  return total;
}

int64_t LlamaModel::ActivationBytes(int64_t tokens, int64_t logit_rows, int64_t mini_sequence_tokens,
                                    DType dtype) const {
  const model::ModelConfig& c = config_;
  const int64_t chunk = std::max<int64_t>(1, std::min(tokens, mini_sequence_tokens));
  const int64_t head_rows = std::max<int64_t>(1, std::min(logit_rows, mini_sequence_tokens));
  const int64_t element = static_cast<int64_t>(DTypeSize(dtype));
  const int64_t scratch = chunk * (2 * c.hidden_size + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * c.intermediate_size);
  const int64_t hidden = tokens * c.hidden_size;
  const int64_t head = head_rows * (c.hidden_size + c.vocab_size);
  return (scratch + hidden + head) * element + head_rows * c.vocab_size * int64_t{4};
}

absl::StatusOr<std::vector<std::vector<float>>> LlamaModel::Forward(Backend& backend,
                                                                    absl::Span<const Segment> segments,
                                                                    int64_t mini_sequence_tokens,
                                                                    bool hidden_on_host) const {
  const model::ModelConfig& c = config_;
  if (mini_sequence_tokens <= 0) {
    return absl::InvalidArgumentError(
        StrCat("Forward: mini_sequence_tokens must be positive, got ", mini_sequence_tokens));
  }
  if (segments.empty()) return absl::InvalidArgumentError("Forward: no sequences");
  // Rows of all segments, concatenated: segment i owns rows [starts[i], starts[i + 1]).
  std::vector<int64_t> starts = {0};
  std::vector<int32_t> ids;
  std::vector<int64_t> logit_rows;  // global row indices
  for (const Segment& seg : segments) {
    const int64_t n = static_cast<int64_t>(seg.ids.size());
    if (seg.kv == nullptr || n == 0) return absl::InvalidArgumentError("Forward: a sequence without tokens or cache");
    if (seg.kv->num_layers() != c.num_layers) {
      return absl::InvalidArgumentError(StrCat("Forward: a KV cache of ", seg.kv->num_layers(), " layers for a ",
                                               c.num_layers, "-layer model"));
    }
    if (seg.first_position < 0 || seg.first_position + n > seg.kv->capacity_tokens()) {
      return absl::OutOfRangeError(StrCat("Forward: positions [", seg.first_position, ", ", seg.first_position + n,
                                          ") exceed the KV capacity of ", seg.kv->capacity_tokens(), " tokens"));
    }
    for (int64_t row : seg.logit_rows) {
      if (row < 0 || row >= n) {
        return absl::InvalidArgumentError(StrCat("Forward: logit row ", row, " is outside the ", n, " new tokens"));
      }
      logit_rows.push_back(starts.back() + row);
    }
    ids.insert(ids.end(), seg.ids.begin(), seg.ids.end());
    starts.push_back(starts.back() + n);
  }
  const int64_t n = starts.back();
  for (size_t i = 0; i < segments.size(); ++i) {
    segments[i].kv->BeginPass(segments[i].first_position, starts[i + 1] - starts[i]);
  }
  const auto forward_start = std::chrono::steady_clock::now();
  // With paged segments, RoPE runs over every row of a mini-sequence at once and the paged rows' K/V are
  // written in one call, at per-row positions and pool slots uploaded once for the whole pass (the
  // same in every layer).
  const bool indexed = std::any_of(segments.begin(), segments.end(), [](const Segment& s) { return s.kv->paged(); });
  // One new token per sequence over caches wholly in backend memory is a decode step: the backend may
  // record it and run it as one unit (paged sequences' indices below are then staged for it). Transfers
  // between tiers are not recorded.
  const bool paged_decode = indexed && std::all_of(segments.begin(), segments.end(), [](const Segment& s) {
    return s.kv->paged() && s.ids.size() == 1;
  });
  StepScope step(backend, !hidden_on_host && ((n == 1 && !indexed && segments[0].kv->AllOnDevice()) || paged_decode));
  STRATA_RETURN_IF_ERROR(step.Begin());
  Indices positions, slots;
  if (indexed) {
    std::vector<int32_t> row_positions(n), row_slots(n, -1);
    for (size_t i = 0; i < segments.size(); ++i) {
      for (int64_t r = starts[i]; r < starts[i + 1]; ++r) {
        const int64_t position = segments[i].first_position + (r - starts[i]);
        row_positions[r] = static_cast<int32_t>(position);
        row_slots[r] = segments[i].kv->Slot(position);
      }
    }
    STRATA_ASSIGN_OR_RETURN(positions, backend.UploadIndices(std::move(row_positions)));
    STRATA_ASSIGN_OR_RETURN(slots, backend.UploadIndices(std::move(row_slots)));
  }
  // Paged sequences with one new token each that lead the batch (the worker puts decodes first) attend in
  // one call: segment b is row b, its block table row b of decode_tables.
  DecodeGroup decode;
  if (indexed) {
    STRATA_ASSIGN_OR_RETURN(decode, DecodeGroup::Make(backend, segments));
  }
  const int64_t chunk = std::min(n, mini_sequence_tokens);
  STRATA_ASSIGN_OR_RETURN(Scratch scratch, Scratch::Allocate(backend, c, std::max<int64_t>(chunk, 1)));

  // The residual stream of every new token lives across layers; everything else is per mini-sequence.
  // When it lives in host memory, `resident` holds the current mini-sequence's rows on the device.
  const DType dtype = backend.activation_dtype();
  Tensor hidden, resident;
  if (hidden_on_host) {
    STRATA_ASSIGN_OR_RETURN(hidden, backend.AllocateHost(dtype, n, c.hidden_size));
    STRATA_ASSIGN_OR_RETURN(resident, backend.Allocate(dtype, std::max<int64_t>(chunk, 1), c.hidden_size));
    for (int64_t begin = 0; begin < n; begin += chunk) {
      const int64_t rows = std::min(chunk, n - begin);
      Tensor h = resident.Rows(0, rows);
      STRATA_RETURN_IF_ERROR(backend.Embed(embed_, absl::MakeConstSpan(ids).subspan(begin, rows), h));
      STRATA_RETURN_IF_ERROR(backend.CopyRows(h, 0, hidden, begin, rows, Queue::kCompute));
    }
  } else {
    STRATA_ASSIGN_OR_RETURN(hidden, backend.Allocate(dtype, n, c.hidden_size));
    STRATA_RETURN_IF_ERROR(backend.Embed(embed_, ids, hidden));
  }

  const float eps = static_cast<float>(c.rms_norm_eps);
  std::vector<KvLayer> views(segments.size());
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    const LlamaLayerWeights& w = layers_[layer];
    const AttentionParams attention{.num_heads = c.num_heads,
                                    .num_kv_heads = c.num_kv_heads,
                                    .head_dim = c.head_dim,
                                    .scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim)),
                                    .window = c.layer_window[layer]};
    for (size_t i = 0; i < segments.size(); ++i) {
      STRATA_ASSIGN_OR_RETURN(views[i], segments[i].kv->Acquire(layer, segments[i].first_position));
    }
    for (int64_t begin = 0; begin < n; begin += chunk) {
      const int64_t rows = std::min(chunk, n - begin);
      Scratch s = scratch.Prefix(rows);
      Tensor h = hidden_on_host ? resident.Rows(0, rows) : hidden.Rows(begin, rows);
      if (hidden_on_host) STRATA_RETURN_IF_ERROR(backend.CopyRows(hidden, begin, h, 0, rows, Queue::kCompute));

      STRATA_RETURN_IF_ERROR(backend.RmsNorm(h, w.attn_norm, eps, s.normed));
      STRATA_RETURN_IF_ERROR(backend.Linear(s.normed, w.q, w.q_bias, s.q));
      STRATA_RETURN_IF_ERROR(backend.Linear(s.normed, w.k, w.k_bias, s.k));
      STRATA_RETURN_IF_ERROR(backend.Linear(s.normed, w.v, w.v_bias, s.v));
      if (indexed) {
        STRATA_RETURN_IF_ERROR(backend.RopeAt(rope_inv_freq_, positions.Slice(begin, rows), s.q, s.k));
        const auto paged = std::find_if(views.begin(), views.end(), [](const KvLayer& view) { return view.paged(); });
        STRATA_RETURN_IF_ERROR(backend.WriteKvAt(s.k, s.v, slots.Slice(begin, rows), *paged));
      }
      // Position-dependent work per segment: the part of each segment inside this mini-sequence.
      for (size_t i = 0; i < segments.size(); ++i) {
        const int64_t part_begin = std::max(begin, starts[i]);
        const int64_t part_end = std::min(begin + rows, starts[i + 1]);
        if (part_begin >= part_end) continue;
        const int64_t offset = part_begin - begin, part_rows = part_end - part_begin;
        const int64_t position = segments[i].first_position + (part_begin - starts[i]);
        Tensor q = s.q.Rows(offset, part_rows), k = s.k.Rows(offset, part_rows), v = s.v.Rows(offset, part_rows);
        Tensor attn = s.attn.Rows(offset, part_rows);
        if (static_cast<int64_t>(i) < decode.size) continue;  // below, with the group
        if (!indexed) STRATA_RETURN_IF_ERROR(backend.Rope(rope_inv_freq_, position, q, k));
        if (!views[i].paged()) STRATA_RETURN_IF_ERROR(backend.WriteKv(k, v, position, views[i]));
        AttentionParams part_attention = attention;
        part_attention.first_position = position;
        STRATA_RETURN_IF_ERROR(segments[i].kv->Attend(backend, layer, q, views[i], part_attention, attn));
      }
      if (begin < decode.size) {
        // The group's rows in this mini-sequence: rows [0, count) of its scratch.
        const int64_t first = begin, count = std::min(decode.size, begin + rows) - begin;
        Tensor attn = s.attn.Rows(0, count);
        STRATA_RETURN_IF_ERROR(backend.DecodeAttention(
            s.q.Rows(0, count), views[0], decode.tables.Slice(first * decode.table_stride, count * decode.table_stride),
            decode.table_stride, decode.positions.Slice(first, count), attention, attn));
      }
      STRATA_RETURN_IF_ERROR(backend.Linear(s.attn, w.o, w.o_bias, s.projected));
      STRATA_RETURN_IF_ERROR(backend.AddRmsNorm(s.projected, h, w.mlp_norm, eps, s.normed));
      STRATA_RETURN_IF_ERROR(backend.Linear(s.normed, w.gate, w.gate_bias, s.gate));
      STRATA_RETURN_IF_ERROR(backend.Linear(s.normed, w.up, w.up_bias, s.up));
      STRATA_RETURN_IF_ERROR(backend.SwiGlu(s.gate, s.up, s.gate));
      STRATA_RETURN_IF_ERROR(backend.Linear(s.gate, w.down, w.down_bias, s.projected));
      STRATA_RETURN_IF_ERROR(backend.Add(s.projected, h));
      if (hidden_on_host) STRATA_RETURN_IF_ERROR(backend.CopyRows(h, 0, hidden, begin, rows, Queue::kCompute));
    }
    // The written rows go home and the next layer's off-device heads start coming in while this
    // layer's work runs (after the last layer: layer 0 of the next decode step).
    for (size_t i = 0; i < segments.size(); ++i) {
      const Segment& seg = segments[i];
      const int64_t seg_rows = starts[i + 1] - starts[i];
      STRATA_RETURN_IF_ERROR(seg.kv->Release(layer, seg.first_position, seg_rows));
      if (layer + 1 < c.num_layers) {
        STRATA_RETURN_IF_ERROR(seg.kv->Prefetch(layer + 1, seg.first_position));
      } else {
        STRATA_RETURN_IF_ERROR(seg.kv->Prefetch(0, seg.first_position + seg_rows));
      }
    }
    if (n >= kProgressLogTokens) {  // a long prefill says how far it is, once its layer has run
      STRATA_ASSIGN_OR_RETURN(Fence layer_done, backend.Record(Queue::kCompute));
      STRATA_RETURN_IF_ERROR(backend.Synchronize(layer_done));
      // Layers cost the same, so the time left is the elapsed time per layer times the layers left.
      const double elapsed_s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - forward_start).count();
      const double eta_s = elapsed_s / static_cast<double>(layer + 1) * static_cast<double>(c.num_layers - layer - 1);
      LogInfo(StrCat("event=prefill_progress layer=", layer + 1, "/", c.num_layers, " tokens=", n,
                     " elapsed_s=", absl::StrFormat("%.1f", elapsed_s), " eta_s=", absl::StrFormat("%.1f", eta_s)));
    }
  }

  // Final norm and LM head over the requested rows only, a mini-sequence at a time.
  const int64_t vocab = c.vocab_size;
  std::vector<float> logits(logit_rows.size() * vocab);
  if (!logit_rows.empty()) {
    const int64_t head_rows = std::min<int64_t>(static_cast<int64_t>(logit_rows.size()), mini_sequence_tokens);
    STRATA_ASSIGN_OR_RETURN(Tensor head_in, backend.Allocate(backend.activation_dtype(), head_rows, c.hidden_size));
    STRATA_ASSIGN_OR_RETURN(Tensor head_out, backend.Allocate(backend.activation_dtype(), head_rows, vocab));
    for (size_t begin = 0; begin < logit_rows.size(); begin += head_rows) {
      const int64_t rows = std::min<int64_t>(head_rows, static_cast<int64_t>(logit_rows.size() - begin));
      for (int64_t i = 0; i < rows; ++i) {
        Tensor normed_row = head_in.Rows(i, 1);
        Tensor row = hidden.Rows(logit_rows[begin + i], 1);
        if (hidden_on_host) {
          Tensor staged = resident.Rows(0, 1);
          STRATA_RETURN_IF_ERROR(backend.CopyRows(hidden, logit_rows[begin + i], staged, 0, 1, Queue::kCompute));
          row = staged;
        }
        STRATA_RETURN_IF_ERROR(backend.RmsNorm(row, final_norm_, eps, normed_row));
      }
      Tensor out = head_out.Rows(0, rows);
      STRATA_RETURN_IF_ERROR(backend.Linear(head_in.Rows(0, rows), lm_head_, Tensor(), out));
      STRATA_RETURN_IF_ERROR(backend.CopyToHost(out, absl::MakeSpan(logits.data() + begin * vocab, rows * vocab)));
    }
  }
  STRATA_RETURN_IF_ERROR(step.End());
  for (const Segment& seg : segments) STRATA_RETURN_IF_ERROR(seg.kv->Finish());
  if (hidden_on_host) {  // the host rows are freed on return: their copies must be done
    STRATA_ASSIGN_OR_RETURN(Fence done, backend.Record(Queue::kCompute));
    STRATA_RETURN_IF_ERROR(backend.Synchronize(done));
  }

  std::vector<std::vector<float>> out;
  out.reserve(segments.size());
  size_t at = 0;
  for (const Segment& seg : segments) {
    const size_t count = seg.logit_rows.size() * vocab;
    out.emplace_back(logits.begin() + at, logits.begin() + at + count);
    at += count;
  }
  return out;
}

}  // namespace strata::engine
