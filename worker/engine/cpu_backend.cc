#include "worker/engine/cpu_backend.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

#include "common/strings.h"
#include "worker/engine/chunk_selection.h"

namespace strata::engine {
namespace {

constexpr size_t kAlignmentBytes = 64;  // one cache line; also what AVX-512 loads like
// Below this many elements an op runs on one thread: spawning a team costs more than it saves.
constexpr int64_t kParallelElements = 1 << 14;

absl::Status ExpectF32(const Tensor& tensor, std::string_view what) {
  if (tensor.empty()) return absl::InvalidArgumentError(StrCat(what, ": no tensor"));
  if (tensor.dtype() != DType::kF32) {
    return absl::InvalidArgumentError(
        StrCat(what, ": the CPU backend computes in F32, got ", DTypeName(tensor.dtype())));
  }
  return absl::OkStatus();
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuBackendOptions& options)
      : threads_(options.threads > 0 ? options.threads : omp_get_num_procs()) {
    openblas_set_num_threads(threads_);
  }

  std::string_view name() const override { return "cpu"; }
  DType activation_dtype() const override { return DType::kF32; }

  absl::StatusOr<Tensor> Allocate(DType dtype, int64_t rows, int64_t cols) override {
    STRATA_ASSIGN_OR_RETURN(const size_t rounded, AllocationBytes(dtype, rows, cols, kAlignmentBytes));
    void* data = std::aligned_alloc(kAlignmentBytes, rounded);
    if (data == nullptr) {
      return absl::ResourceExhaustedError(StrCat("Allocate: out of host memory for ", rounded, " bytes"));
    }
    std::shared_ptr<const void> owner(data, [](const void* p) { std::free(const_cast<void*>(p)); });
    return Tensor(dtype, rows, cols, data, std::move(owner));
  }

  absl::StatusOr<Tensor> Upload(absl::Span<const float> values, int64_t rows, int64_t cols) override {
    if (rows < 0 || cols < 0 || (cols != 0 && rows > static_cast<int64_t>(values.size()) / cols) ||
        static_cast<int64_t>(values.size()) != rows * cols) {
      return absl::InvalidArgumentError(
          StrCat("Upload: ", values.size(), " values do not fill [", rows, ", ", cols, "]"));
    }
    STRATA_ASSIGN_OR_RETURN(Tensor out, Allocate(DType::kF32, rows, cols));
    std::memcpy(out.data(), values.data(), values.size() * sizeof(float));
    return out;
  }

  absl::StatusOr<Tensor> LoadWeight(const model::TensorInfo& info, int64_t rows, int64_t cols) override {
    int64_t elements = 0;
    if (rows < 0 || cols < 0 || __builtin_mul_overflow(rows, cols, &elements) || info.num_elements() != elements) {
      return absl::InvalidArgumentError(StrCat(info.file, ": tensor '", info.name, "' has ", info.num_elements(),
                                               " elements, expected [", rows, ", ", cols, "]"));
    }
    const auto* src = info.bytes.data();
    if (info.dtype == DType::kF32 && reinterpret_cast<uintptr_t>(src) % alignof(float) == 0) {
      // Used in place: the mapping is read-only and no op writes to its inputs.
      return Tensor(DType::kF32, rows, cols, const_cast<std::byte*>(src), info.mapping);
    }
    STRATA_ASSIGN_OR_RETURN(Tensor out, Allocate(DType::kF32, rows, cols));
    constexpr int64_t kChunk = 1 << 16;
    const size_t element_bytes = DTypeSize(info.dtype);
#pragma omp parallel for schedule(static) num_threads(threads_) if (elements > kParallelElements)
    for (int64_t begin = 0; begin < elements; begin += kChunk) {
      const int64_t count = std::min(kChunk, elements - begin);
      ConvertToF32(info.dtype, src + begin * element_bytes, absl::MakeSpan(out.data<float>() + begin, count));
    }
    return out;
  }

  absl::Status CopyToHost(const Tensor& src, absl::Span<float> dst) override {
    STRATA_RETURN_IF_ERROR(ExpectF32(src, "CopyToHost"));
    if (static_cast<int64_t>(dst.size()) != src.elements()) {
      return absl::InvalidArgumentError(
          StrCat("CopyToHost: destination holds ", dst.size(), " floats, source ", src.elements()));
    }
    std::memcpy(dst.data(), src.data(), src.bytes());
    return absl::OkStatus();
  }

  // Page-aligned, as direct I/O (the SSD tier's bounce buffers) needs.
  absl::StatusOr<Tensor> AllocateHost(DType dtype, int64_t rows, int64_t cols) override {
    constexpr size_t kPageBytes = 4096;
    STRATA_ASSIGN_OR_RETURN(const size_t rounded, AllocationBytes(dtype, rows, cols, kPageBytes));
    void* data = std::aligned_alloc(kPageBytes, rounded);
    if (data == nullptr) {
      return absl::ResourceExhaustedError(StrCat("AllocateHost: out of host memory for ", rounded, " bytes"));
    }
    std::shared_ptr<const void> owner(data, [](const void* p) { std::free(const_cast<void*>(p)); });
    return Tensor(dtype, rows, cols, data, std::move(owner));
  }

  // Host to host: every queue is this thread, so copies are done when they return.
  absl::Status CopyRows(const Tensor& src, int64_t src_row, Tensor& dst, int64_t dst_row, int64_t rows,
                        Queue) override {
    STRATA_RETURN_IF_ERROR(CheckCopyRows(src, src_row, dst, dst_row, rows));
    const size_t row_bytes = src.cols() * DTypeSize(src.dtype());
    std::memmove(static_cast<std::byte*>(dst.data()) + dst_row * row_bytes,
                 static_cast<const std::byte*>(src.data()) + src_row * row_bytes, rows * row_bytes);
    return absl::OkStatus();
  }
  absl::StatusOr<Fence> Record(Queue) override { return Fence{}; }
  absl::Status Wait(Queue, const Fence&) override { return absl::OkStatus(); }
  absl::Status Synchronize(const Fence&) override { return absl::OkStatus(); }

  absl::Status Embed(const Tensor& table, absl::Span<const int32_t> ids, Tensor& out) override {
    STRATA_RETURN_IF_ERROR(ExpectF32(table, "Embed table"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, DType::kF32, static_cast<int64_t>(ids.size()), table.cols(), "Embed out"));
    const int64_t width = table.cols();
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= table.rows()) {
        return absl::InvalidArgumentError(
            StrCat("token id ", ids[i], " at index ", i, " is outside the vocabulary [0, ", table.rows(), ")"));
      }
      std::memcpy(out.data<float>() + i * width, table.data<float>() + ids[i] * width, width * sizeof(float));
    }
    return absl::OkStatus();
  }

  absl::Status RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    STRATA_RETURN_IF_ERROR(ExpectF32(x, "RmsNorm x"));
    STRATA_RETURN_IF_ERROR(ExpectShape(weight, DType::kF32, 1, x.cols(), "RmsNorm weight"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, DType::kF32, x.rows(), x.cols(), "RmsNorm out"));
    const int64_t width = x.cols();
    const float* w = weight.data<float>();
#pragma omp parallel for schedule(static) num_threads(threads_) if (x.elements() > kParallelElements)
    for (int64_t row = 0; row < x.rows(); ++row) {
      const float* in = x.data<float>() + row * width;
      float* o = out.data<float>() + row * width;
      double sum_squares = 0.0;
#pragma omp simd reduction(+ : sum_squares)
      for (int64_t i = 0; i < width; ++i) sum_squares += static_cast<double>(in[i]) * in[i];
      const float inv_rms = 1.0f / std::sqrt(static_cast<float>(sum_squares / width) + eps);
      for (int64_t i = 0; i < width; ++i) o[i] = w[i] * (in[i] * inv_rms);
    }
    return absl::OkStatus();
  }

  absl::Status Linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out) override {
    STRATA_RETURN_IF_ERROR(ExpectF32(x, "Linear x"));
    STRATA_RETURN_IF_ERROR(ExpectShape(weight, DType::kF32, weight.rows(), x.cols(), "Linear weight"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, DType::kF32, x.rows(), weight.rows(), "Linear out"));
    if (!bias.empty()) STRATA_RETURN_IF_ERROR(ExpectShape(bias, DType::kF32, 1, weight.rows(), "Linear bias"));
    const int64_t n = x.rows(), in = x.cols(), width = weight.rows();
    if (n == 0) return absl::OkStatus();
    if (n == 1) {  // a decode step: OpenBLAS's gemv streams the weight better than its gemm does at M=1
      cblas_sgemv(CblasRowMajor, CblasNoTrans, width, in, 1.0f, weight.data<float>(), in, x.data<float>(), 1, 0.0f,
                  out.data<float>(), 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, width, in, 1.0f, x.data<float>(), in,
                  weight.data<float>(), in, 0.0f, out.data<float>(), width);
    }
    if (!bias.empty()) {
      const float* b = bias.data<float>();
      for (int64_t row = 0; row < n; ++row) {
        float* o = out.data<float>() + row * width;
        for (int64_t i = 0; i < width; ++i) o[i] += b[i];
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Indices> UploadIndices(std::vector<int32_t> values) override {
    auto host = std::make_shared<const std::vector<int32_t>>(std::move(values));
    return Indices{.host = host, .device = host->data(), .owner = host, .size = static_cast<int64_t>(host->size())};
  }

  absl::Status CopyBlocksToHost(const Tensor& pool, absl::Span<const int32_t> blocks, int64_t block_bytes,
                                absl::Span<std::byte* const> host) override {
    STRATA_RETURN_IF_ERROR(CheckBlockCopy(pool, blocks, block_bytes, host.size()));
    for (size_t i = 0; i < blocks.size(); ++i) {
      std::memcpy(host[i], static_cast<const std::byte*>(pool.data()) + blocks[i] * block_bytes, block_bytes);
    }
    return absl::OkStatus();
  }

  absl::Status CopyBlocksFromHost(absl::Span<const std::byte* const> host, Tensor& pool,
                                  absl::Span<const int32_t> blocks, int64_t block_bytes) override {
    STRATA_RETURN_IF_ERROR(CheckBlockCopy(pool, blocks, block_bytes, host.size()));
    for (size_t i = 0; i < blocks.size(); ++i) {
      std::memcpy(static_cast<std::byte*>(pool.data()) + blocks[i] * block_bytes, host[i], block_bytes);
    }
    return absl::OkStatus();
  }

  absl::Status Rope(const Tensor& inv_freq, int64_t first_position, Tensor& q, Tensor& k) override {
    return RopeRows(inv_freq, [first_position](int64_t row) { return first_position + row; }, q, k);
  }

  absl::Status RopeAt(const Tensor& inv_freq, const Indices& positions, Tensor& q, Tensor& k) override {
    if (positions.size != q.rows()) {
      return absl::InvalidArgumentError(StrCat("RopeAt: ", positions.size, " positions for ", q.rows(), " rows"));
    }
    return RopeRows(inv_freq, [&positions](int64_t row) { return int64_t{positions[row]}; }, q, k);
  }

  absl::Status WriteKv(const Tensor& k, const Tensor& v, int64_t first_position, KvLayer& layer) override {
    const int64_t n = k.rows();
    if (layer.paged()) return absl::InvalidArgumentError("WriteKv: a paged layer takes WriteKvAt");
    if (first_position < 0 || first_position + n > layer.capacity_tokens) {
      return absl::OutOfRangeError(StrCat("WriteKv: positions [", first_position, ", ", first_position + n,
                                          ") exceed the KV capacity of ", layer.capacity_tokens, " tokens"));
    }
    return WriteKvRows(k, v, [first_position](int64_t t) { return first_position + t; }, layer);
  }

  absl::Status WriteKvAt(const Tensor& k, const Tensor& v, const Indices& slots, KvLayer& layer) override {
    if (!layer.paged()) return absl::InvalidArgumentError("WriteKvAt: the layer is not paged");
    if (slots.size != k.rows()) {
      return absl::InvalidArgumentError(StrCat("WriteKvAt: ", slots.size, " slots for ", k.rows(), " rows"));
    }
    // A slot names (block, offset in the block) directly, not a token of the sequence.
    const int64_t block_tokens = layer.block_tokens;
    return WriteKvRows(
        k, v, [&slots](int64_t t) { return int64_t{slots[t]}; }, layer,
        [&layer, block_tokens](int64_t head, int64_t slot) {
          return slot / block_tokens * layer.block_rows + head * block_tokens + slot % block_tokens;
        });
  }

  // One (query row, head) pair per iteration: scores over the visible keys, a max-subtracted softmax in
  // float32, then the weighted sum of values. O(n · keys · head_dim) per head; parallel over pairs.
  absl::Status Attention(const Tensor& q, const KvLayer& layer, const AttentionParams& p, Tensor& out) override {
    const int64_t n = q.rows(), head_dim = p.head_dim;
    STRATA_RETURN_IF_ERROR(ExpectShape(q, DType::kF32, n, p.num_heads * head_dim, "Attention q"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, DType::kF32, n, p.num_heads * head_dim, "Attention out"));
    if (p.num_kv_heads != layer.num_kv_heads || head_dim != layer.k.cols() || p.num_heads % p.num_kv_heads != 0) {
      return absl::InvalidArgumentError(StrCat("Attention: ", p.num_heads, " query heads over ", p.num_kv_heads,
                                               " KV heads of width ", head_dim, " do not fit a KV layer of ",
                                               layer.num_kv_heads, " heads of width ", layer.k.cols()));
    }
    if (p.first_position < 0 || p.first_position + n > layer.capacity_tokens) {
      return absl::OutOfRangeError(StrCat("Attention: positions up to ", p.first_position + n,
                                          " exceed the KV capacity of ", layer.capacity_tokens, " tokens"));
    }
    const int64_t group = p.num_heads / p.num_kv_heads;
#pragma omp parallel num_threads(threads_) if (n * p.num_heads > 1)
    {
      std::vector<float> scores;
#pragma omp for collapse(2) schedule(dynamic, 4)
      for (int64_t row = 0; row < n; ++row) {
        for (int64_t head = 0; head < p.num_heads; ++head) {
          const int64_t position = p.first_position + row;
          const int64_t first_key = p.window > 0 ? std::max<int64_t>(0, position - p.window + 1) : 0;
          const int64_t kv_head = head / group;
          const float* query = q.data<float>() + row * q.cols() + head * head_dim;
          const float* keys = layer.k.data<float>();
          const float* values = layer.v.data<float>();
          scores.resize(position - first_key + 1);
          float max_score = -INFINITY;
          for (int64_t j = first_key; j <= position; ++j) {
            const float* key = keys + layer.Row(kv_head, j) * head_dim;
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t d = 0; d < head_dim; ++d) dot += query[d] * key[d];
            scores[j - first_key] = dot * p.scale;
            max_score = std::max(max_score, scores[j - first_key]);
          }
          float total = 0.0f;
          for (float& s : scores) {
            s = std::exp(s - max_score);
            total += s;
          }
          float* o = out.data<float>() + row * out.cols() + head * head_dim;
          std::fill(o, o + head_dim, 0.0f);
          const float inv_total = 1.0f / total;
          for (int64_t j = first_key; j <= position; ++j) {
            const float weight = scores[j - first_key] * inv_total;
            const float* value = values + layer.Row(kv_head, j) * head_dim;
#pragma omp simd
            for (int64_t d = 0; d < head_dim; ++d) o[d] += weight * value[d];
          }
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status UpdateKeyBounds(const KvLayer& layer, int64_t first, int64_t rows, int64_t chunk_tokens,
                               Tensor& bounds) override {
    const int64_t head_dim = layer.k.cols();
    STRATA_RETURN_IF_ERROR(ExpectF32(bounds, "UpdateKeyBounds bounds"));
    if (layer.paged() || chunk_tokens <= 0 || first < 0 || rows < 0 || first + rows > layer.capacity_tokens ||
        bounds.cols() != 2 * head_dim || bounds.rows() % layer.num_kv_heads != 0 ||
        bounds.rows() / layer.num_kv_heads * chunk_tokens < first + rows) {
      return absl::InvalidArgumentError(StrCat("UpdateKeyBounds: rows [", first, ", ", first + rows, ") of a ",
                                               layer.capacity_tokens, "-token layer in bounds of [", bounds.rows(),
                                               ", ", bounds.cols(), "] by chunks of ", chunk_tokens));
    }
    UpdateKeyBoundsReference(layer.k.data<float>(), layer.num_kv_heads, layer.capacity_tokens, head_dim, first, rows,
                             chunk_tokens, bounds.rows() / layer.num_kv_heads, bounds.data<float>());
    return absl::OkStatus();
  }

  absl::Status GatherImportantKv(const Tensor& q, const Tensor& bounds, const SparseGather& g,
                                 const AttentionParams& p, KvLayer& out) override {
    STRATA_RETURN_IF_ERROR(ExpectF32(q, "GatherImportantKv q"));
    STRATA_RETURN_IF_ERROR(ExpectF32(bounds, "GatherImportantKv bounds"));
    STRATA_RETURN_IF_ERROR(CheckSparseGather(q, bounds, g, p, out));
    const std::vector<int32_t> chosen = SelectChunksReference(q.data<float>(), bounds.data<float>(), g, p);
    const int64_t head_dim = p.head_dim, chunk_bytes = g.chunk_tokens * head_dim * sizeof(float);
    for (int64_t h = 0; h < p.num_kv_heads; ++h) {
      for (const bool value : {false, true}) {
        const Tensor& home = value ? g.v_homes[h] : g.k_homes[h];
        const Tensor& tail = value ? g.v_tail[h] : g.k_tail[h];
        float* dst = (value ? out.v : out.k).data<float>() + h * out.capacity_tokens * head_dim;
        for (int64_t i = 0; i < g.select; ++i) {
          std::memcpy(dst + i * g.chunk_tokens * head_dim,
                      home.data<float>() + int64_t{chosen[h * g.select + i]} * g.chunk_tokens * head_dim, chunk_bytes);
        }
        std::memcpy(dst + g.select * g.chunk_tokens * head_dim, tail.data<float>(),
                    g.tail_rows * head_dim * sizeof(float));
      }
    }
    return absl::OkStatus();
  }

  absl::Status SwiGlu(const Tensor& gate, const Tensor& up, Tensor& out) override {
    STRATA_RETURN_IF_ERROR(ExpectF32(gate, "SwiGlu gate"));
    STRATA_RETURN_IF_ERROR(ExpectShape(up, DType::kF32, gate.rows(), gate.cols(), "SwiGlu up"));
    STRATA_RETURN_IF_ERROR(ExpectShape(out, DType::kF32, gate.rows(), gate.cols(), "SwiGlu out"));
    const float* g = gate.data<float>();
    const float* u = up.data<float>();
    float* o = out.data<float>();
#pragma omp parallel for simd schedule(static) num_threads(threads_) if (gate.elements() > kParallelElements)
    for (int64_t i = 0; i < gate.elements(); ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    return absl::OkStatus();
  }

  absl::Status Add(const Tensor& delta, Tensor& x) override {
    STRATA_RETURN_IF_ERROR(ExpectF32(x, "Add x"));
    STRATA_RETURN_IF_ERROR(ExpectShape(delta, DType::kF32, x.rows(), x.cols(), "Add delta"));
    const float* d = delta.data<float>();
    float* o = x.data<float>();
#pragma omp parallel for simd schedule(static) num_threads(threads_) if (x.elements() > kParallelElements)
    for (int64_t i = 0; i < x.elements(); ++i) o[i] += d[i];
    return absl::OkStatus();
  }

 private:
  // Copies row t of k and v to token token_of(t) of each head (skipped when negative), at row
  // row_of(head, token) of the layer (default: the layer's own addressing).
  template <typename TokenOf, typename RowOf = std::nullptr_t>
  absl::Status WriteKvRows(const Tensor& k, const Tensor& v, TokenOf token_of, KvLayer& layer, RowOf row_of = nullptr) {
    const int64_t head_dim = layer.k.cols(), width = layer.num_kv_heads * head_dim, n = k.rows();
    STRATA_RETURN_IF_ERROR(ExpectShape(k, DType::kF32, n, width, "WriteKv k"));
    STRATA_RETURN_IF_ERROR(ExpectShape(v, DType::kF32, n, width, "WriteKv v"));
    for (int64_t t = 0; t < n; ++t) {
      const int64_t token = token_of(t);
      if (token < 0) continue;
      for (int64_t head = 0; head < layer.num_kv_heads; ++head) {
        int64_t row = 0;
        if constexpr (std::is_same_v<RowOf, std::nullptr_t>) {
          row = layer.Row(head, token);
        } else {
          row = row_of(head, token);
        }
        std::memcpy(layer.k.data<float>() + row * head_dim, k.data<float>() + t * width + head * head_dim,
                    head_dim * sizeof(float));
        std::memcpy(layer.v.data<float>() + row * head_dim, v.data<float>() + t * width + head * head_dim,
                    head_dim * sizeof(float));
      }
    }
    return absl::OkStatus();
  }

  // Rotate-half RoPE with row r at position_of(r).
  template <typename PositionOf>
  absl::Status RopeRows(const Tensor& inv_freq, PositionOf position_of, Tensor& q, Tensor& k) {
    STRATA_RETURN_IF_ERROR(ExpectF32(inv_freq, "Rope inv_freq"));
    STRATA_RETURN_IF_ERROR(ExpectF32(q, "Rope q"));
    STRATA_RETURN_IF_ERROR(ExpectF32(k, "Rope k"));
    const int64_t half = inv_freq.cols(), head_dim = 2 * half;
    if (inv_freq.rows() != 1 || q.cols() % head_dim != 0 || k.cols() % head_dim != 0 || q.rows() != k.rows()) {
      return absl::InvalidArgumentError(StrCat("Rope: q [", q.rows(), ", ", q.cols(), "] and k [", k.rows(), ", ",
                                               k.cols(), "] are not rows of heads of width ", head_dim));
    }
    const float* freq = inv_freq.data<float>();
#pragma omp parallel num_threads(threads_) if (q.elements() > kParallelElements)
    {
      std::vector<float> cos(half), sin(half);  // one row's angles, reused across rows
#pragma omp for schedule(static)
      for (int64_t row = 0; row < q.rows(); ++row) {
        // As transformers does: the angle is a float32 product, its cosine and sine rounded to float32.
        const float position = static_cast<float>(position_of(row));
        for (int64_t i = 0; i < half; ++i) {
          const float angle = position * freq[i];
          cos[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
          sin[i] = static_cast<float>(std::sin(static_cast<double>(angle)));
        }
        for (Tensor* x : {&q, &k}) {
          for (int64_t h = 0; h < x->cols() / head_dim; ++h) {
            float* v = x->data<float>() + row * x->cols() + h * head_dim;
            for (int64_t i = 0; i < half; ++i) {
              const float a = v[i], b = v[i + half];
              v[i] = a * cos[i] - b * sin[i];
              v[i + half] = b * cos[i] + a * sin[i];
            }
          }
        }
      }
    }
    return absl::OkStatus();
  }


  int threads_;
};

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(const CpuBackendOptions& options) {
  return std::make_unique<CpuBackend>(options);
}

}  // namespace strata::engine
