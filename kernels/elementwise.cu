#include "kernels/elementwise.h"

#include <cmath>
#include <limits>
#include <string_view>

#include "common/strings.h"
#include "kernels/cuda_status.h"
#include "kernels/device_types.cuh"
#include "kernels/dispatch.h"

namespace strata::kernels {
namespace {

constexpr int kThreads = 256;

// Embedding gather. Grid: one block per output row; block: kThreads threads striding the row in 16-byte
// vectors. Bytes: 2 * rows * width * sizeof(T) (read the table rows, write out); no FLOPs.
template <typename T>
__global__ void EmbedKernel(const T* __restrict__ table, int64_t width, const int32_t* __restrict__ ids,
                            T* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const Vec<T>* src = reinterpret_cast<const Vec<T>*>(table + static_cast<int64_t>(ids[row]) * width);
  Vec<T>* dst = reinterpret_cast<Vec<T>*>(out + row * width);
  for (int64_t i = threadIdx.x; i < width / kVecElements<T>; i += blockDim.x) dst[i] = src[i];
}

template <typename T>
__global__ void EmbedScalarKernel(const T* __restrict__ table, int64_t width, const int32_t* __restrict__ ids,
                                  T* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const T* src = table + static_cast<int64_t>(ids[row]) * width;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) out[row * width + i] = src[i];
}

// Residual add + RMSNorm. Grid: one block per row; block: kThreads threads striding the row. Pass 1
// adds delta into x (when given) and sums squares in float32; a block reduction gives the row's inverse
// RMS; pass 2 re-reads x (from L1/L2) and writes weight * x * inv_rms. Bytes: (3 or 2) reads + (2 or 1)
// writes of rows * width * sizeof(T); FLOPs ~4 per element. Precision: float32 throughout, T at rest.
template <typename T>
__global__ void AddRmsNormKernel(T* __restrict__ x, const T* __restrict__ delta, const T* __restrict__ weight,
                                 float eps, int64_t width, T* __restrict__ out) {
  __shared__ float scratch[kThreads / kWarpSize];
  T* row = x + blockIdx.x * width;
  const T* drow = delta == nullptr ? nullptr : delta + blockIdx.x * width;
  float sum_squares = 0.0f;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    float v = ToFloat(row[i]);
    if (drow != nullptr) {
      v += ToFloat(drow[i]);
      const T stored = FromFloat<T>(v);
      row[i] = stored;
      v = ToFloat(stored);  // normalize what the residual stream holds, as an unfused add would
    }
    sum_squares += v * v;
  }
  sum_squares = BlockSum(sum_squares, scratch);
  const float inv_rms = 1.0f / sqrtf(sum_squares / static_cast<float>(width) + eps);
  T* orow = out + blockIdx.x * width;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    orow[i] = FromFloat<T>(ToFloat(weight[i]) * (ToFloat(row[i]) * inv_rms));
  }
}

// RoPE in place. Grid: one block per row (token); block: 128 threads. The row's position is
// first_position + row (Rope; first_position from device_position when set) or positions[row] (RopeAt).
// The row's head_dim/2 cosines and sines are computed once into shared memory (double-precision sincos of
// the float32 angle), then every (head, pair) of q and k is rotated. Bytes: 2 * rows * (q_cols + k_cols) *
// sizeof(T); FLOPs ~6 per pair.
template <typename T>
__global__ void RopeKernel(const float* __restrict__ inv_freq, int half, int64_t first_position,
                           const int64_t* device_position, const int32_t* positions, T* q, int64_t q_cols, T* k,
                           int64_t k_cols) {
  if (device_position != nullptr) first_position = *device_position;
  extern __shared__ float trig[];  // cos[half], sin[half]
  float* cos_row = trig;
  float* sin_row = trig + half;
  const int64_t row = blockIdx.x;
  // One int64 -> float32 conversion for both sources: RopeAt matches Rope bit for bit.
  const int64_t absolute = positions != nullptr ? int64_t{positions[row]} : first_position + row;
  const float position = static_cast<float>(absolute);
  for (int j = threadIdx.x; j < half; j += blockDim.x) {
    const float angle = position * inv_freq[j];
    double s, c;
    sincos(static_cast<double>(angle), &s, &c);
    cos_row[j] = static_cast<float>(c);
    sin_row[j] = static_cast<float>(s);
  }
  __syncthreads();
  const int head_dim = 2 * half;
  for (int which = 0; which < 2; ++which) {
    T* base = (which == 0 ? q + row * q_cols : k + row * k_cols);
    const int64_t pairs = (which == 0 ? q_cols : k_cols) / 2;
    for (int64_t p = threadIdx.x; p < pairs; p += blockDim.x) {
      const int64_t head = p / half;
      const int j = static_cast<int>(p % half);
      T* v = base + head * head_dim;
      const float a = ToFloat(v[j]), b = ToFloat(v[j + half]);
      v[j] = FromFloat<T>(a * cos_row[j] - b * sin_row[j]);
      v[j + half] = FromFloat<T>(b * cos_row[j] + a * sin_row[j]);
    }
  }
}

// SwiGLU: out = gate / (1 + exp(-gate)) * up. Grid-stride over 16-byte vectors. Bytes: 3 * count *
// sizeof(T); FLOPs ~5 per element (one expf). Float32 math.
template <typename T>
__global__ void SwiGluKernel(const T* __restrict__ gate, const T* __restrict__ up, int64_t vectors, T* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < vectors; i += int64_t{gridDim.x} * blockDim.x) {
    const Vec<T> g = reinterpret_cast<const Vec<T>*>(gate)[i];
    const Vec<T> u = reinterpret_cast<const Vec<T>*>(up)[i];
    Vec<T> o;
#pragma unroll
    for (int e = 0; e < kVecElements<T>; ++e) {
      const float gv = ToFloat(g.v[e]);
      o.v[e] = FromFloat<T>(gv / (1.0f + expf(-gv)) * ToFloat(u.v[e]));
    }
    reinterpret_cast<Vec<T>*>(out)[i] = o;
  }
}

template <typename T>
__global__ void SwiGluScalarKernel(const T* gate, const T* up, int64_t count, T* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const float gv = ToFloat(gate[i]);
    out[i] = FromFloat<T>(gv / (1.0f + expf(-gv)) * ToFloat(up[i]));
  }
}

// x += delta (bias: delta indexed modulo `period`). Grid-stride over elements. Bytes: 3 * count * sizeof(T).
template <typename T>
__global__ void AddKernel(const T* __restrict__ delta, int64_t count, int64_t period, T* x) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = FromFloat<T>(ToFloat(x[i]) + ToFloat(delta[period == 0 ? i : i % period]));
  }
}

// Paged KV-cache write. Grid: x strides the units of one row (U: a 16-byte vector of T where head rows and
// pointers allow it, else T), y strides rows; a row with a negative slot is skipped by the whole block.
// Unit u of head h of row r goes to pool row (slot / block_tokens) * block_stride + h * block_tokens +
// slot % block_tokens, slot = slots[r]. Bytes: 4 * written rows * num_kv_heads * head_dim * sizeof(T).
template <typename U>
__global__ void WriteKvPagedKernel(const U* __restrict__ k, const U* __restrict__ v, int64_t rows,
                                   int units_per_head, int units_per_row, const int32_t* __restrict__ slots,
                                   int64_t block_tokens, int64_t block_stride, U* k_pool, U* v_pool) {
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const int64_t slot = slots[row];
    if (slot < 0) continue;
    const int64_t slot_row = slot / block_tokens * block_stride + slot % block_tokens;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < units_per_row; c += gridDim.x * blockDim.x) {
      const int head = c / units_per_head, u = c % units_per_head;
      const int64_t dst = (slot_row + head * block_tokens) * units_per_head + u;
      k_pool[dst] = k[row * units_per_row + c];
      v_pool[dst] = v[row * units_per_row + c];
    }
  }
}

// Paged KV gather, WriteKvPagedKernel's inverse for keys [0, tokens) of a block table: unit u of head h of
// token t comes from pool row table[t / block_tokens] * block_stride + h * block_tokens + t % block_tokens and
// goes to out[h][t]. Grid: x strides the units of one token, y strides tokens. Bytes: 4 * tokens * num_kv_heads
// * head_dim * sizeof(T).
template <typename U>
__global__ void GatherKvPagedKernel(const U* __restrict__ k_pool, const U* __restrict__ v_pool,
                                    const int32_t* __restrict__ table, int64_t block_tokens, int64_t block_stride,
                                    int64_t tokens, int units_per_head, int units_per_row, U* k_out, U* v_out) {
  for (int64_t t = blockIdx.y; t < tokens; t += gridDim.y) {
    const int64_t pool_row = int64_t{table[t / block_tokens]} * block_stride + t % block_tokens;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < units_per_row; c += gridDim.x * blockDim.x) {
      const int head = c / units_per_head, u = c % units_per_head;
      const int64_t src = (pool_row + head * block_tokens) * units_per_head + u;
      const int64_t dst = (head * tokens + t) * units_per_head + u;
      k_out[dst] = k_pool[src];
      v_out[dst] = v_pool[src];
    }
  }
}

// Block copy. Grid: x strides the units of one block (U: 16-byte vector or byte), y strides the blocks.
// Bytes: 2 * count * block_bytes.
template <typename U>
__global__ void CopyBlocksKernel(const U* src, const int32_t* __restrict__ src_blocks, U* dst,
                                 const int32_t* __restrict__ dst_blocks, int64_t count, int64_t units_per_block) {
  for (int64_t i = blockIdx.y; i < count; i += gridDim.y) {
    const U* from = src + (src_blocks == nullptr ? i : int64_t{src_blocks[i]}) * units_per_block;
    U* to = dst + (dst_blocks == nullptr ? i : int64_t{dst_blocks[i]}) * units_per_block;
    for (int64_t u = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; u < units_per_block;
         u += int64_t{gridDim.x} * blockDim.x) {
      to[u] = from[u];
    }
  }
}

// A 2-D grid for kernels that stride `items` rows of `units` each along y and x: at most 65535 rows of
// blocks, and about GridFor's total blocks in all.
dim3 RowGrid(int64_t items, int64_t units) {
  constexpr int64_t kMaxGridY = 65535;
  const int64_t y = items < kMaxGridY ? items : kMaxGridY;
  const int64_t per_item = (units + kThreads - 1) / kThreads;
  const int64_t budget = (int64_t{GridFor(items * units, kThreads)} + y - 1) / y;
  const int64_t x = per_item < budget ? per_item : budget;
  return dim3(static_cast<unsigned>(x < 1 ? 1 : x), static_cast<unsigned>(y < 1 ? 1 : y));
}

// KV-cache write: element (row, head, d) of k/v goes to cache[head][first_position + row][d]. Grid-stride
// over elements of k and v. Bytes: 4 * rows * kv_dim * sizeof(T).
template <typename T>
__global__ void WriteKvKernel(const T* __restrict__ k, const T* __restrict__ v, int64_t rows, int64_t num_kv_heads,
                              int64_t head_dim, int64_t first_position, const int64_t* device_position,
                              int64_t capacity, T* k_cache, T* v_cache) {
  if (device_position != nullptr) first_position = *device_position;
  const int64_t kv_dim = num_kv_heads * head_dim, count = rows * kv_dim;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = i / kv_dim, c = i % kv_dim, head = c / head_dim, d = c % head_dim;
    const int64_t dst = (head * capacity + first_position + row) * head_dim + d;
    k_cache[dst] = k[i];
    v_cache[dst] = v[i];
  }
}

template <typename Src, typename Dst>
__global__ void ConvertKernel(const Src* __restrict__ src, int64_t count, Dst* __restrict__ dst) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = FromFloat<Dst>(ToFloat(src[i]));
  }
}

// Normal(0, stddev) by Box-Muller over two counter-based uniforms per element.
template <typename T>
__global__ void FillNormalKernel(T* data, int64_t count, float stddev, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const float u1 = fmaxf(UniformFloat(seed, 2 * i), 1e-7f), u2 = UniformFloat(seed, 2 * i + 1);
    data[i] = FromFloat<T>(stddev * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2));
  }
}

absl::Status NonNegative(std::string_view what, int64_t a, int64_t b) {
  if (a < 0 || b < 0) return absl::InvalidArgumentError(StrCat(what, ": negative size ", a, " x ", b));
  return absl::OkStatus();
}

// The launcher of Rope and RopeAt: positions from first_position / device_position, or from `positions`.
absl::Status LaunchRope(std::string_view what, DType dtype, const float* inv_freq, int64_t head_dim,
                        int64_t first_position, const int64_t* device_position, const int32_t* positions,
                        int64_t rows, void* q, int64_t q_cols, void* k, int64_t k_cols, cudaStream_t stream) {
  if (head_dim <= 0 || head_dim % 2 != 0 || q_cols % head_dim != 0 || k_cols % head_dim != 0 || rows < 0) {
    return absl::InvalidArgumentError(StrCat(what, ": q [", rows, ", ", q_cols, "] and k [", rows, ", ", k_cols,
                                             "] are not rows of heads of even width ", head_dim));
  }
  if (rows == 0) return absl::OkStatus();
  constexpr int kRopeThreads = 128;
  const int half = static_cast<int>(head_dim / 2);
  return DispatchActivation(dtype, what, [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    RopeKernel<T><<<static_cast<unsigned>(rows), kRopeThreads, 2 * half * sizeof(float), stream>>>(
        inv_freq, half, first_position, device_position, positions, static_cast<T*>(q), q_cols, static_cast<T*>(k),
        k_cols);
    STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("RopeKernel");
    return absl::OkStatus();
  });
}

}  // namespace

absl::Status EmbedRows(DType dtype, const void* table, int64_t vocab, int64_t width, const int32_t* ids, int64_t rows,
                       void* out, cudaStream_t stream) {
  STRATA_RETURN_IF_ERROR(NonNegative("EmbedRows", rows, width));
  if (vocab <= 0) return absl::InvalidArgumentError("EmbedRows: empty table");
  if (rows == 0 || width == 0) return absl::OkStatus();
  return DispatchActivation(dtype, "EmbedRows", [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    const T* t = static_cast<const T*>(table);
    T* o = static_cast<T*>(out);
    if (width % kVecElements<T> == 0 && Aligned16(table) && Aligned16(out)) {
      EmbedKernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(t, width, ids, o);
    } else {
      EmbedScalarKernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(t, width, ids, o);
    }
    STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("EmbedKernel");
    return absl::OkStatus();
  });
}

absl::Status AddRmsNorm(DType dtype, void* x, const void* delta, const void* weight, float eps, int64_t rows,
                        int64_t width, void* out, cudaStream_t stream) {
  STRATA_RETURN_IF_ERROR(NonNegative("AddRmsNorm", rows, width));
  if (rows == 0 || width == 0) return absl::OkStatus();
  return DispatchActivation(dtype, "AddRmsNorm", [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    AddRmsNormKernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
        static_cast<T*>(x), static_cast<const T*>(delta), static_cast<const T*>(weight), eps, width,
        static_cast<T*>(out));
    STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("AddRmsNormKernel");
    return absl::OkStatus();
  });
}

absl::Status Rope(DType dtype, const float* inv_freq, int64_t head_dim, int64_t first_position, int64_t rows, void* q,
                  int64_t q_cols, void* k, int64_t k_cols, cudaStream_t stream, const int64_t* device_position) {
  return LaunchRope("Rope", dtype, inv_freq, head_dim, first_position, device_position, nullptr, rows, q, q_cols, k,
                    k_cols, stream);
}

absl::Status RopeAt(DType dtype, const float* inv_freq, int64_t head_dim, const int32_t* positions, int64_t rows,
                    void* q, int64_t q_cols, void* k, int64_t k_cols, cudaStream_t stream) {
  if (positions == nullptr && rows > 0) return absl::InvalidArgumentError("RopeAt: positions are required");
  return LaunchRope("RopeAt", dtype, inv_freq, head_dim, 0, nullptr, positions, rows, q, q_cols, k, k_cols, stream);
}

absl::Status SwiGlu(DType dtype, const void* gate, const void* up, int64_t count, void* out, cudaStream_t stream) {
  STRATA_RETURN_IF_ERROR(NonNegative("SwiGlu", count, 1));
  if (count == 0) return absl::OkStatus();
  return DispatchActivation(dtype, "SwiGlu", [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    const T* g = static_cast<const T*>(gate);
    const T* u = static_cast<const T*>(up);
    T* o = static_cast<T*>(out);
    if (count % kVecElements<T> == 0 && Aligned16(gate) && Aligned16(up) && Aligned16(out)) {
      const int64_t vectors = count / kVecElements<T>;
      SwiGluKernel<T><<<GridFor(vectors, kThreads), kThreads, 0, stream>>>(g, u, vectors, o);
    } else {
      SwiGluScalarKernel<T><<<GridFor(count, kThreads), kThreads, 0, stream>>>(g, u, count, o);
    }
    STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("SwiGluKernel");
    return absl::OkStatus();
  });
}

absl::Status Add(DType dtype, const void* delta, int64_t count, void* x, cudaStream_t stream) {
  STRATA_RETURN_IF_ERROR(NonNegative("Add", count, 1));
  if (count == 0) return absl::OkStatus();
  return DispatchActivation(dtype, "Add", [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    AddKernel<T><<<GridFor(count, kThreads), kThreads, 0, stream>>>(static_cast<const T*>(delta), count, 0,
                                                                    static_cast<T*>(x));
    STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("AddKernel");
    return absl::OkStatus();
  });
}

absl::Status AddBias(DType dtype, const void* bias, int64_t rows, int64_t cols, void* x, cudaStream_t stream) {
  STRATA_RETURN_IF_ERROR(NonNegative("AddBias", rows, cols));
  if (rows == 0 || cols == 0) return absl::OkStatus();
  return DispatchActivation(dtype, "AddBias", [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    AddKernel<T><<<GridFor(rows * cols, kThreads), kThreads, 0, stream>>>(static_cast<const T*>(bias), rows * cols,
                                                                          cols, static_cast<T*>(x));
    STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("AddKernel(bias)");
    return absl::OkStatus();
  });
}

absl::Status WriteKvCache(DType dtype, const void* k, const void* v, int64_t rows, int64_t num_kv_heads,
                          int64_t head_dim, int64_t first_position, int64_t capacity_tokens, void* k_cache,
                          void* v_cache, cudaStream_t stream, const int64_t* device_position) {
  if (rows < 0 || num_kv_heads <= 0 || head_dim <= 0 || first_position < 0 ||
      first_position + rows > capacity_tokens) {
    return absl::OutOfRangeError(StrCat("WriteKvCache: positions [", first_position, ", ", first_position + rows,
                                        ") exceed the KV capacity of ", capacity_tokens, " tokens"));
  }
  if (rows == 0) return absl::OkStatus();
  return DispatchActivation(dtype, "WriteKvCache", [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    WriteKvKernel<T><<<GridFor(rows * num_kv_heads * head_dim, kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(k), static_cast<const T*>(v), rows, num_kv_heads, head_dim, first_position,
        device_position, capacity_tokens, static_cast<T*>(k_cache), static_cast<T*>(v_cache));
    STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("WriteKvKernel");
    return absl::OkStatus();
  });
}

absl::Status WriteKvPaged(DType dtype, const void* k, const void* v, int64_t rows, int64_t num_kv_heads,
                          int64_t head_dim, const int32_t* slots, int64_t block_tokens, int64_t block_stride,
                          void* k_pool, void* v_pool, cudaStream_t stream) {
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (rows < 0 || num_kv_heads <= 0 || head_dim <= 0 || num_kv_heads * head_dim > kIntMax || block_tokens <= 0 ||
      block_stride < num_kv_heads * block_tokens) {
    return absl::InvalidArgumentError(StrCat("WriteKvPaged: ", rows, " rows of ", num_kv_heads, " heads of ",
                                             head_dim, " into blocks of ", block_tokens, " tokens at a stride of ",
                                             block_stride, " rows"));
  }
  if (rows == 0) return absl::OkStatus();
  if (k == nullptr || v == nullptr || slots == nullptr || k_pool == nullptr || v_pool == nullptr) {
    return absl::InvalidArgumentError("WriteKvPaged: k, v, slots and both pools are required");
  }
  return DispatchActivation(dtype, "WriteKvPaged", [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    auto launch = [&](auto unit_tag) {
      using U = decltype(unit_tag);
      const int units_per_head = static_cast<int>(head_dim * sizeof(T) / sizeof(U));
      const int units_per_row = static_cast<int>(num_kv_heads) * units_per_head;
      WriteKvPagedKernel<U><<<RowGrid(rows, units_per_row), kThreads, 0, stream>>>(
          static_cast<const U*>(k), static_cast<const U*>(v), rows, units_per_head, units_per_row, slots,
          block_tokens, block_stride, static_cast<U*>(k_pool), static_cast<U*>(v_pool));
    };
    if (head_dim % kVecElements<T> == 0 && Aligned16(k) && Aligned16(v) && Aligned16(k_pool) && Aligned16(v_pool)) {
      launch(Vec<T>{});
    } else {
      launch(T{});
    }
    STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("WriteKvPagedKernel");
    return absl::OkStatus();
  });
}

absl::Status GatherKvPaged(DType dtype, const void* k_pool, const void* v_pool, const int32_t* block_table,
                           int64_t block_tokens, int64_t block_stride, int64_t num_kv_heads, int64_t head_dim,
                           int64_t tokens, void* k_out, void* v_out, cudaStream_t stream) {
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (tokens < 0 || num_kv_heads <= 0 || head_dim <= 0 || num_kv_heads * head_dim > kIntMax || block_tokens <= 0 ||
      block_stride < num_kv_heads * block_tokens) {
    return absl::InvalidArgumentError(StrCat("GatherKvPaged: ", tokens, " tokens of ", num_kv_heads, " heads of ",
                                             head_dim, " from blocks of ", block_tokens, " tokens at a stride of ",
                                             block_stride, " rows"));
  }
  if (tokens == 0) return absl::OkStatus();
  if (k_pool == nullptr || v_pool == nullptr || block_table == nullptr || k_out == nullptr || v_out == nullptr) {
    return absl::InvalidArgumentError("GatherKvPaged: both pools, the block table and both outputs are required");
  }
  return DispatchActivation(dtype, "GatherKvPaged", [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    auto launch = [&](auto unit_tag) {
      using U = decltype(unit_tag);
      const int units_per_head = static_cast<int>(head_dim * sizeof(T) / sizeof(U));
      const int units_per_row = static_cast<int>(num_kv_heads) * units_per_head;
      GatherKvPagedKernel<U><<<RowGrid(tokens, units_per_row), kThreads, 0, stream>>>(
          static_cast<const U*>(k_pool), static_cast<const U*>(v_pool), block_table, block_tokens, block_stride,
          tokens, units_per_head, units_per_row, static_cast<U*>(k_out), static_cast<U*>(v_out));
    };
    if (head_dim % kVecElements<T> == 0 && Aligned16(k_pool) && Aligned16(v_pool) && Aligned16(k_out) &&
        Aligned16(v_out)) {
      launch(Vec<T>{});
    } else {
      launch(T{});
    }
    STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("GatherKvPagedKernel");
    return absl::OkStatus();
  });
}

absl::Status CopyBlocks(const void* src, const int32_t* src_blocks, void* dst, const int32_t* dst_blocks,
                        int64_t count, int64_t block_bytes, cudaStream_t stream) {
  if (count < 0 || block_bytes <= 0) {
    return absl::InvalidArgumentError(StrCat("CopyBlocks: ", count, " blocks of ", block_bytes, " bytes"));
  }
  if (count == 0) return absl::OkStatus();
  if (src == nullptr || dst == nullptr) return absl::InvalidArgumentError("CopyBlocks: src and dst are required");
  if (block_bytes % sizeof(uint4) == 0 && Aligned16(src) && Aligned16(dst)) {
    const int64_t units = block_bytes / static_cast<int64_t>(sizeof(uint4));
    CopyBlocksKernel<uint4><<<RowGrid(count, units), kThreads, 0, stream>>>(
        static_cast<const uint4*>(src), src_blocks, static_cast<uint4*>(dst), dst_blocks, count, units);
  } else {
    CopyBlocksKernel<unsigned char><<<RowGrid(count, block_bytes), kThreads, 0, stream>>>(
        static_cast<const unsigned char*>(src), src_blocks, static_cast<unsigned char*>(dst), dst_blocks, count,
        block_bytes);
  }
  STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("CopyBlocksKernel");
  return absl::OkStatus();
}

absl::Status Convert(DType src_dtype, const void* src, DType dst_dtype, void* dst, int64_t count,
                     cudaStream_t stream) {
  STRATA_RETURN_IF_ERROR(NonNegative("Convert", count, 1));
  if (count == 0) return absl::OkStatus();
  return DispatchActivation(src_dtype, "Convert source", [&](auto src_tag) -> absl::Status {
    return DispatchActivation(dst_dtype, "Convert destination", [&](auto dst_tag) -> absl::Status {
      using S = decltype(src_tag);
      using D = decltype(dst_tag);
      ConvertKernel<S, D><<<GridFor(count, kThreads), kThreads, 0, stream>>>(static_cast<const S*>(src), count,
                                                                             static_cast<D*>(dst));
      STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("ConvertKernel");
      return absl::OkStatus();
    });
  });
}

absl::Status FillNormal(DType dtype, void* data, int64_t count, float stddev, uint64_t seed, cudaStream_t stream) {
  STRATA_RETURN_IF_ERROR(NonNegative("FillNormal", count, 1));
  if (count == 0) return absl::OkStatus();
  return DispatchActivation(dtype, "FillNormal", [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    FillNormalKernel<T><<<GridFor(count, kThreads), kThreads, 0, stream>>>(static_cast<T*>(data), count, stddev,
                                                                           seed);
    STRATA_CUDA_RETURN_IF_LAUNCH_FAILED("FillNormalKernel");
    return absl::OkStatus();
  });
}

}  // namespace strata::kernels
