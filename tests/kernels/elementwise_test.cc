// Elementwise, GEMM, KV-packing and sampling kernels against CPU references on fresh random inputs, with
// outputs poisoned (NaN) before each run.
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/kv_pack.h"
#include "kernels/sampling.h"
#include "tests/kernels/device_test_util.h"

namespace strata {
// gtest prints a parameter in test listings; by default a DType shows as a raw byte.
inline void PrintTo(DType dtype, std::ostream* os) { *os << DTypeName(dtype); }
}  // namespace strata

namespace strata::kernels {
namespace {

using testing::DeviceArray;

class DTypeTest : public ::testing::TestWithParam<DType> {};

// Rotate-half RoPE of rows of `heads` heads on the host: row r at positions[r], float32 angle, cosine and
// sine in double rounded to float (as the kernel and transformers compute them).
std::vector<float> RotateHalf(std::vector<float> x, int64_t heads, int64_t head_dim,
                              const std::vector<int64_t>& positions, const std::vector<float>& inv_freq) {
  for (size_t r = 0; r < positions.size(); ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      float* v = &x[(r * heads + h) * head_dim];
      for (int64_t i = 0; i < head_dim / 2; ++i) {
        const float angle = static_cast<float>(positions[r]) * inv_freq[i];
        const float c = static_cast<float>(std::cos(static_cast<double>(angle)));
        const float s = static_cast<float>(std::sin(static_cast<double>(angle)));
        const float a = v[i], b = v[i + head_dim / 2];
        v[i] = a * c - b * s;
        v[i + head_dim / 2] = b * c + a * s;
      }
    }
  }
  return x;
}

std::vector<float> InvFreq(int64_t head_dim) {
  std::vector<float> inv_freq(head_dim / 2);
  for (int64_t i = 0; i < head_dim / 2; ++i) inv_freq[i] = std::pow(500000.0f, -2.0f * i / head_dim);
  return inv_freq;
}

TEST_P(DTypeTest, EmbedGathersRows) {
  STRATA_SKIP_WITHOUT_GPU();
  const DType dtype = GetParam();
  std::mt19937 rng(1);
  constexpr int64_t kVocab = 301, kWidth = 72;
  std::vector<float> table = testing::RandomFloats(kVocab * kWidth, rng);
  testing::RoundTo(dtype, table);
  const std::vector<int32_t> ids = {5, 300, 0, 5, 17, 299, 42};
  DeviceArray d_table(dtype, table), out(dtype, ids.size() * kWidth);
  DeviceBuffer d_ids = *DeviceBuffer::Allocate(ids.size() * 4);
  ASSERT_EQ(cudaMemcpy(d_ids.data(), ids.data(), ids.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_TRUE(EmbedRows(dtype, d_table.data(), kVocab, kWidth, d_ids.data<int32_t>(), ids.size(), out.data(), nullptr).ok());
  std::vector<float> expected;
  for (int32_t id : ids) expected.insert(expected.end(), table.begin() + id * kWidth, table.begin() + (id + 1) * kWidth);
  EXPECT_EQ(out.Get(), expected);
}

TEST_P(DTypeTest, AddRmsNormMatchesReference) {
  STRATA_SKIP_WITHOUT_GPU();
  const DType dtype = GetParam();
  std::mt19937 rng(2);
  for (int64_t width : {64, 4096, 1000}) {
    constexpr int64_t kRows = 13;
    std::vector<float> x = testing::RandomFloats(kRows * width, rng), delta = testing::RandomFloats(kRows * width, rng),
                       weight = testing::RandomFloats(width, rng);
    testing::RoundTo(dtype, x);
    testing::RoundTo(dtype, delta);
    testing::RoundTo(dtype, weight);
    for (bool with_delta : {false, true}) {
      DeviceArray dx(dtype, x), dd(dtype, delta), dw(dtype, weight), out(dtype, x.size());
      ASSERT_TRUE(AddRmsNorm(dtype, dx.data(), with_delta ? dd.data() : nullptr, dw.data(), 1e-5f, kRows, width,
                             out.data(), nullptr)
                      .ok());
      std::vector<float> sum = x, expected(x.size());
      for (int64_t r = 0; r < kRows; ++r) {
        double squares = 0;
        for (int64_t i = 0; i < width; ++i) {
          if (with_delta) sum[r * width + i] += delta[r * width + i];
          squares += static_cast<double>(sum[r * width + i]) * sum[r * width + i];
        }
        const double inv = 1.0 / std::sqrt(squares / width + 1e-5);
        for (int64_t i = 0; i < width; ++i) expected[r * width + i] = static_cast<float>(weight[i] * sum[r * width + i] * inv);
      }
      EXPECT_LT(testing::RelativeError(out.Get(), expected), testing::ToleranceFor(dtype)) << width;
      if (with_delta) {
        std::vector<float> rounded = sum;
        testing::RoundTo(dtype, rounded);
        EXPECT_LT(testing::RelativeError(dx.Get(), rounded), 1e-6) << "residual stream, width " << width;
      }
    }
  }
}

TEST_P(DTypeTest, RopeRotatesQAndK) {
  STRATA_SKIP_WITHOUT_GPU();
  const DType dtype = GetParam();
  std::mt19937 rng(3);
  for (int64_t head_dim : {16, 64, 128}) {
    constexpr int64_t kRows = 9, kQHeads = 4, kKHeads = 2, kFirst = 1234;
    std::vector<float> q = testing::RandomFloats(kRows * kQHeads * head_dim, rng),
                       k = testing::RandomFloats(kRows * kKHeads * head_dim, rng), inv_freq = InvFreq(head_dim);
    testing::RoundTo(dtype, q);
    testing::RoundTo(dtype, k);
    DeviceArray dq(dtype, q), dk(dtype, k), df(DType::kF32, inv_freq);
    ASSERT_TRUE(Rope(dtype, df.data<float>(), head_dim, kFirst, kRows, dq.data(), kQHeads * head_dim, dk.data(),
                     kKHeads * head_dim, nullptr)
                    .ok());
    std::vector<int64_t> positions(kRows);
    std::iota(positions.begin(), positions.end(), kFirst);
    for (auto [x, heads, device] : {std::tuple{&q, kQHeads, &dq}, std::tuple{&k, kKHeads, &dk}}) {
      const std::vector<float> expected = RotateHalf(*x, heads, head_dim, positions, inv_freq);
      EXPECT_LT(testing::RelativeError(device->Get(), expected), dtype == DType::kF32 ? 1e-6 : 5e-3) << head_dim;
    }
  }
}

// RopeAt at consecutive positions is Rope bit for bit; at arbitrary positions every row is Rope of that row
// alone at its position (bit for bit) and matches the host rotation.
TEST_P(DTypeTest, RopeAtMatchesRopeRowByRow) {
  STRATA_SKIP_WITHOUT_GPU();
  const DType dtype = GetParam();
  std::mt19937 rng(9);
  constexpr int64_t kHeadDim = 128, kQHeads = 4, kKHeads = 2;
  constexpr int64_t kQCols = kQHeads * kHeadDim, kKCols = kKHeads * kHeadDim;
  const std::vector<float> inv_freq = InvFreq(kHeadDim);
  const DeviceArray df(DType::kF32, inv_freq);
  auto random_rows = [&](int64_t rows, int64_t cols) {
    std::vector<float> x = testing::RandomFloats(rows * cols, rng);
    testing::RoundTo(dtype, x);
    return x;
  };
  {
    constexpr int64_t kRows = 9, kFirst = 1234;
    const std::vector<float> q = random_rows(kRows, kQCols), k = random_rows(kRows, kKCols);
    std::vector<int32_t> positions(kRows);
    std::iota(positions.begin(), positions.end(), kFirst);
    const DeviceBuffer d_positions = testing::DeviceInt32s(positions);
    DeviceArray q_rope(dtype, q), k_rope(dtype, k), q_at(dtype, q), k_at(dtype, k);
    ASSERT_TRUE(Rope(dtype, df.data<float>(), kHeadDim, kFirst, kRows, q_rope.data(), kQCols, k_rope.data(), kKCols,
                     nullptr)
                    .ok());
    ASSERT_TRUE(RopeAt(dtype, df.data<float>(), kHeadDim, d_positions.data<int32_t>(), kRows, q_at.data(), kQCols,
                       k_at.data(), kKCols, nullptr)
                    .ok());
    EXPECT_EQ(q_at.Get(), q_rope.Get());
    EXPECT_EQ(k_at.Get(), k_rope.Get());
  }
  const std::vector<int32_t> positions = {0, 7, 100000, 3, 65535, 1234567, 42, 7};
  const int64_t rows = static_cast<int64_t>(positions.size());
  const std::vector<float> q = random_rows(rows, kQCols), k = random_rows(rows, kKCols);
  const DeviceBuffer d_positions = testing::DeviceInt32s(positions);
  DeviceArray q_at(dtype, q), k_at(dtype, k);
  ASSERT_TRUE(RopeAt(dtype, df.data<float>(), kHeadDim, d_positions.data<int32_t>(), rows, q_at.data(), kQCols,
                     k_at.data(), kKCols, nullptr)
                  .ok());
  const std::vector<float> got_q = q_at.Get(), got_k = k_at.Get();
  for (int64_t r = 0; r < rows; ++r) {
    DeviceArray q_row(dtype, std::vector<float>(q.begin() + r * kQCols, q.begin() + (r + 1) * kQCols)),
        k_row(dtype, std::vector<float>(k.begin() + r * kKCols, k.begin() + (r + 1) * kKCols));
    ASSERT_TRUE(Rope(dtype, df.data<float>(), kHeadDim, positions[r], 1, q_row.data(), kQCols, k_row.data(), kKCols,
                     nullptr)
                    .ok());
    EXPECT_EQ(std::vector<float>(got_q.begin() + r * kQCols, got_q.begin() + (r + 1) * kQCols), q_row.Get())
        << "row " << r;
    EXPECT_EQ(std::vector<float>(got_k.begin() + r * kKCols, got_k.begin() + (r + 1) * kKCols), k_row.Get())
        << "row " << r;
  }
  const std::vector<int64_t> wide_positions(positions.begin(), positions.end());
  const double tolerance = dtype == DType::kF32 ? 1e-6 : 5e-3;
  EXPECT_LT(testing::RelativeError(got_q, RotateHalf(q, kQHeads, kHeadDim, wide_positions, inv_freq)), tolerance);
  EXPECT_LT(testing::RelativeError(got_k, RotateHalf(k, kKHeads, kHeadDim, wide_positions, inv_freq)), tolerance);
  EXPECT_FALSE(RopeAt(dtype, df.data<float>(), kHeadDim, nullptr, rows, q_at.data(), kQCols, k_at.data(), kKCols,
                      nullptr)
                   .ok());
}

TEST_P(DTypeTest, SwiGluAddBiasAndConvert) {
  STRATA_SKIP_WITHOUT_GPU();
  const DType dtype = GetParam();
  std::mt19937 rng(4);
  for (int64_t count : {int64_t{1} << 16, int64_t{1001}}) {
    std::vector<float> g = testing::RandomFloats(count, rng, 3.0f), u = testing::RandomFloats(count, rng);
    testing::RoundTo(dtype, g);
    testing::RoundTo(dtype, u);
    DeviceArray dg(dtype, g), du(dtype, u), out(dtype, count);
    ASSERT_TRUE(SwiGlu(dtype, dg.data(), du.data(), count, out.data(), nullptr).ok());
    std::vector<float> expected(count), added(count);
    for (int64_t i = 0; i < count; ++i) {
      expected[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
      added[i] = u[i] + g[i];
    }
    EXPECT_LT(testing::RelativeError(out.Get(), expected), dtype == DType::kF32 ? 1e-6 : 5e-3) << count;
    ASSERT_TRUE(Add(dtype, dg.data(), count, du.data(), nullptr).ok());
    EXPECT_LT(testing::RelativeError(du.Get(), added), dtype == DType::kF32 ? 1e-7 : 5e-3) << count;
  }
  constexpr int64_t kRows = 7, kCols = 33;
  std::vector<float> x = testing::RandomFloats(kRows * kCols, rng), bias = testing::RandomFloats(kCols, rng);
  testing::RoundTo(dtype, x);
  testing::RoundTo(dtype, bias);
  DeviceArray dx(dtype, x), db(dtype, bias), converted(dtype == DType::kF32 ? DType::kBF16 : DType::kF32, x.size());
  ASSERT_TRUE(AddBias(dtype, db.data(), kRows, kCols, dx.data(), nullptr).ok());
  std::vector<float> expected = x;
  for (int64_t i = 0; i < kRows * kCols; ++i) expected[i] += bias[i % kCols];
  EXPECT_LT(testing::RelativeError(dx.Get(), expected), dtype == DType::kF32 ? 1e-7 : 5e-3);
  ASSERT_TRUE(Convert(dtype, dx.data(), converted.dtype(), converted.data(), x.size(), nullptr).ok());
  std::vector<float> want = dx.Get();
  testing::RoundTo(converted.dtype(), want);
  EXPECT_EQ(converted.Get(), want);
}

TEST_P(DTypeTest, WriteKvCacheAndPackRoundTrip) {
  STRATA_SKIP_WITHOUT_GPU();
  const DType dtype = GetParam();
  std::mt19937 rng(5);
  constexpr int64_t kHeads = 3, kHeadDim = 24, kCapacity = 50, kRows = 7, kFirst = 20;
  std::vector<float> k = testing::RandomFloats(kRows * kHeads * kHeadDim, rng), v = testing::RandomFloats(k.size(), rng);
  testing::RoundTo(dtype, k);
  testing::RoundTo(dtype, v);
  DeviceArray dk(dtype, k), dv(dtype, v), k_cache(dtype, kHeads * kCapacity * kHeadDim),
      v_cache(dtype, kHeads * kCapacity * kHeadDim);
  ASSERT_TRUE(WriteKvCache(dtype, dk.data(), dv.data(), kRows, kHeads, kHeadDim, kFirst, kCapacity, k_cache.data(),
                           v_cache.data(), nullptr)
                  .ok());
  EXPECT_FALSE(WriteKvCache(dtype, dk.data(), dv.data(), kRows, kHeads, kHeadDim, kCapacity - 3, kCapacity,
                            k_cache.data(), v_cache.data(), nullptr)
                   .ok());
  const std::vector<float> kc = k_cache.Get();
  for (int64_t t = 0; t < kRows; ++t) {
    for (int64_t h = 0; h < kHeads; ++h) {
      for (int64_t d = 0; d < kHeadDim; ++d) {
        ASSERT_EQ(kc[(h * kCapacity + kFirst + t) * kHeadDim + d], k[(t * kHeads + h) * kHeadDim + d]);
      }
    }
  }
  // Pack tokens [kFirst, kFirst + kRows) to the payload layout [K|V][head][token][dim], check, unpack into
  // a fresh cache and compare the range.
  const KvCacheLayout layout{dtype, kHeads, kHeadDim, kCapacity};
  DeviceArray payload(dtype, KvLayerPayloadBytes(layout, kRows) / DTypeSize(dtype));
  ASSERT_TRUE(PackKvLayer(layout, k_cache.data(), v_cache.data(), kFirst, kRows, payload.data(), nullptr).ok());
  const std::vector<float> packed = payload.Get();
  for (int64_t which = 0; which < 2; ++which) {
    const std::vector<float>& src = which == 0 ? k : v;
    for (int64_t h = 0; h < kHeads; ++h) {
      for (int64_t t = 0; t < kRows; ++t) {
        for (int64_t d = 0; d < kHeadDim; ++d) {
          ASSERT_EQ(packed[((which * kHeads + h) * kRows + t) * kHeadDim + d], src[(t * kHeads + h) * kHeadDim + d]);
        }
      }
    }
  }
  DeviceArray k2(dtype, kHeads * kCapacity * kHeadDim), v2(dtype, kHeads * kCapacity * kHeadDim);
  ASSERT_TRUE(UnpackKvLayer(layout, payload.data(), kFirst, kRows, k2.data(), v2.data(), nullptr).ok());
  const std::vector<float> k2h = k2.Get(), v2h = v2.Get(), vc = v_cache.Get();
  for (int64_t h = 0; h < kHeads; ++h) {
    for (int64_t t = kFirst; t < kFirst + kRows; ++t) {
      for (int64_t d = 0; d < kHeadDim; ++d) {
        const int64_t i = (h * kCapacity + t) * kHeadDim + d;
        ASSERT_EQ(k2h[i], kc[i]);
        ASSERT_EQ(v2h[i], vc[i]);
      }
    }
  }
  EXPECT_FALSE(PackKvLayer(layout, k_cache.data(), v_cache.data(), kCapacity - 1, 2, payload.data(), nullptr).ok());
}

// WriteKvPaged puts K and V of head h of row i at pool row (slot / block) * stride + h * block + slot % block of
// layer 1 in the engine's pool layout [block][layer][K|V][head][token][dim], skips negative slots and touches
// nothing else (the pool keeps its NaN poison).
TEST_P(DTypeTest, WriteKvPagedPlacesRowsAtTheirSlots) {
  STRATA_SKIP_WITHOUT_GPU();
  const DType dtype = GetParam();
  std::mt19937 rng(10);
  constexpr int64_t kHeads = 3, kBlockTokens = 16, kBlocks = 4, kLayers = 2;
  constexpr int64_t kBlockStride = kLayers * 2 * kHeads * kBlockTokens;  // rows
  const std::vector<int32_t> slots = {5, 17, -1, 63, 0, 40, 33};
  const int64_t rows = static_cast<int64_t>(slots.size());
  const DeviceBuffer d_slots = testing::DeviceInt32s(slots);
  for (int64_t head_dim : {24, 20}) {  // whole 16-byte vectors per head, and (BF16) not
    std::vector<float> k = testing::RandomFloats(rows * kHeads * head_dim, rng),
                       v = testing::RandomFloats(k.size(), rng);
    testing::RoundTo(dtype, k);
    testing::RoundTo(dtype, v);
    const int64_t k_offset = 2 * kHeads * kBlockTokens * head_dim, v_offset = 3 * kHeads * kBlockTokens * head_dim;
    DeviceArray dk(dtype, k), dv(dtype, v), pool(dtype, kBlocks * kBlockStride * head_dim);
    char* base = static_cast<char*>(pool.data());
    const size_t element = DTypeSize(dtype);
    ASSERT_TRUE(WriteKvPaged(dtype, dk.data(), dv.data(), rows, kHeads, head_dim, d_slots.data<int32_t>(),
                             kBlockTokens, kBlockStride, base + k_offset * element, base + v_offset * element, nullptr)
                    .ok());
    std::vector<float> expected(kBlocks * kBlockStride * head_dim, NAN);
    for (int64_t r = 0; r < rows; ++r) {
      if (slots[r] < 0) continue;
      for (int64_t h = 0; h < kHeads; ++h) {
        const int64_t row = slots[r] / kBlockTokens * kBlockStride + h * kBlockTokens + slots[r] % kBlockTokens;
        for (int64_t d = 0; d < head_dim; ++d) {
          expected[k_offset + row * head_dim + d] = k[(r * kHeads + h) * head_dim + d];
          expected[v_offset + row * head_dim + d] = v[(r * kHeads + h) * head_dim + d];
        }
      }
    }
    const std::vector<float> got = pool.Get();
    for (size_t i = 0; i < got.size(); ++i) {
      if (std::isnan(expected[i])) {
        ASSERT_TRUE(std::isnan(got[i])) << "head_dim " << head_dim << ": element " << i << " was written";
      } else {
        ASSERT_EQ(got[i], expected[i]) << "head_dim " << head_dim << ": element " << i;
      }
    }
  }
  void* any = d_slots.data();  // refused before any access
  EXPECT_FALSE(WriteKvPaged(dtype, any, any, rows, kHeads, 24, d_slots.data<int32_t>(), kBlockTokens,
                            kHeads * kBlockTokens - 1, any, any, nullptr)
                   .ok())
      << "a block must hold every head";
}

// GatherKvPaged undoes WriteKvPaged for a sequence: tokens written at the slots of a block table come back
// head-major, [head][token][dim], in token order.
TEST_P(DTypeTest, GatherKvPagedReadsASequenceBackHeadMajor) {
  STRATA_SKIP_WITHOUT_GPU();
  const DType dtype = GetParam();
  std::mt19937 rng(11);
  constexpr int64_t kHeads = 2, kBlockTokens = 16, kBlocks = 4, kLayers = 2, kTokens = 40;
  constexpr int64_t kBlockStride = kLayers * 2 * kHeads * kBlockTokens;
  const std::vector<int32_t> table = {2, 0, 3};
  std::vector<int32_t> slots(kTokens);
  for (int64_t t = 0; t < kTokens; ++t) slots[t] = table[t / kBlockTokens] * kBlockTokens + t % kBlockTokens;
  const DeviceBuffer d_slots = testing::DeviceInt32s(slots), d_table = testing::DeviceInt32s(table);
  for (int64_t head_dim : {24, 20}) {
    std::vector<float> k = testing::RandomFloats(kTokens * kHeads * head_dim, rng),
                       v = testing::RandomFloats(k.size(), rng);
    testing::RoundTo(dtype, k);
    testing::RoundTo(dtype, v);
    const int64_t v_offset = kHeads * kBlockTokens * head_dim;  // layer 0: K then V
    DeviceArray dk(dtype, k), dv(dtype, v), pool(dtype, kBlocks * kBlockStride * head_dim),
        k_out(dtype, k.size()), v_out(dtype, k.size());
    char* base = static_cast<char*>(pool.data());
    const size_t element = DTypeSize(dtype);
    ASSERT_TRUE(WriteKvPaged(dtype, dk.data(), dv.data(), kTokens, kHeads, head_dim, d_slots.data<int32_t>(),
                             kBlockTokens, kBlockStride, base, base + v_offset * element, nullptr)
                    .ok());
    ASSERT_TRUE(GatherKvPaged(dtype, base, base + v_offset * element, d_table.data<int32_t>(), kBlockTokens,
                              kBlockStride, kHeads, head_dim, kTokens, k_out.data(), v_out.data(), nullptr)
                    .ok());
    const std::vector<float> got_k = k_out.Get(), got_v = v_out.Get();
    for (int64_t h = 0; h < kHeads; ++h) {
      for (int64_t t = 0; t < kTokens; ++t) {
        for (int64_t d = 0; d < head_dim; ++d) {
          ASSERT_EQ(got_k[(h * kTokens + t) * head_dim + d], k[(t * kHeads + h) * head_dim + d]) << h << " " << t;
          ASSERT_EQ(got_v[(h * kTokens + t) * head_dim + d], v[(t * kHeads + h) * head_dim + d]) << h << " " << t;
        }
      }
    }
  }
  void* any = d_slots.data();
  EXPECT_FALSE(GatherKvPaged(dtype, any, any, d_table.data<int32_t>(), kBlockTokens, kHeads * kBlockTokens - 1,
                             kHeads, 24, kTokens, any, any, nullptr)
                   .ok());
}

TEST_P(DTypeTest, LinearMatchesReference) {
  STRATA_SKIP_WITHOUT_GPU();
  const DType dtype = GetParam();
  auto stream = CreateStream();
  ASSERT_TRUE(stream.ok());
  auto gemm = Gemm::Create(stream->get());
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  std::mt19937 rng(6);
  for (auto [rows, in, out_features] : {std::tuple<int64_t, int64_t, int64_t>{1, 256, 384}, {5, 4096, 1000},
                                        {8, 1000, 77}, {37, 200, 96}, {300, 512, 1000}}) {
    std::vector<float> x = testing::RandomFloats(rows * in, rng), w = testing::RandomFloats(out_features * in, rng);
    testing::RoundTo(dtype, x);
    testing::RoundTo(dtype, w);
    DeviceArray dx(dtype, x), dw(dtype, w), out(dtype, rows * out_features);
    ASSERT_TRUE(gemm->Linear(dtype, dx.data(), rows, in, dw.data(), out_features, out.data()).ok());
    ASSERT_EQ(cudaStreamSynchronize(stream->get()), cudaSuccess);
    std::vector<float> expected(rows * out_features);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t o = 0; o < out_features; ++o) {
        double acc = 0;
        for (int64_t i = 0; i < in; ++i) acc += static_cast<double>(x[r * in + i]) * w[o * in + i];
        expected[r * out_features + o] = static_cast<float>(acc);
      }
    }
    EXPECT_LT(testing::RelativeError(out.Get(), expected), dtype == DType::kF32 ? 1e-6 : 5e-3) << rows;
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, DTypeTest, ::testing::Values(DType::kF32, DType::kBF16),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

// CopyBlocks gathers pool blocks into a staging buffer and scatters them back through block lists, byte for
// byte, with 16-byte vectors or bytewise (a size not a multiple of 16, a misaligned pointer); blocks not listed
// keep their contents.
TEST(CopyBlocks, GatherAndScatterRoundTrip) {
  STRATA_SKIP_WITHOUT_GPU();
  std::mt19937 rng(12);
  constexpr int64_t kPoolBlocks = 9;
  const std::vector<int32_t> ids = {7, 2, 5, 0, 8};
  const int64_t count = static_cast<int64_t>(ids.size());
  const DeviceBuffer d_ids = testing::DeviceInt32s(ids);
  for (auto [block_bytes, misalign] : {std::pair<int64_t, int64_t>{4096, 0}, {100, 0}, {4096, 4}}) {
    std::vector<uint8_t> pool(kPoolBlocks * block_bytes + misalign);
    for (uint8_t& byte : pool) byte = static_cast<uint8_t>(rng());
    DeviceBuffer d_pool = *DeviceBuffer::Allocate(pool.size());
    DeviceBuffer d_staging = *DeviceBuffer::Allocate(count * block_bytes + misalign);
    DeviceBuffer d_back = *DeviceBuffer::Allocate(pool.size());
    ASSERT_EQ(cudaMemcpy(d_pool.data(), pool.data(), pool.size(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemset(d_staging.data(), 0xAB, d_staging.bytes()), cudaSuccess);
    ASSERT_EQ(cudaMemset(d_back.data(), 0xCD, d_back.bytes()), cudaSuccess);
    const uint8_t* src = d_pool.data<uint8_t>() + misalign;
    uint8_t* staging = d_staging.data<uint8_t>() + misalign;
    uint8_t* back = d_back.data<uint8_t>() + misalign;
    ASSERT_TRUE(CopyBlocks(src, d_ids.data<int32_t>(), staging, nullptr, count, block_bytes, nullptr).ok());
    ASSERT_TRUE(CopyBlocks(staging, nullptr, back, d_ids.data<int32_t>(), count, block_bytes, nullptr).ok());
    std::vector<uint8_t> got_staging(count * block_bytes), got_back(kPoolBlocks * block_bytes);
    ASSERT_EQ(cudaMemcpy(got_staging.data(), staging, got_staging.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(got_back.data(), back, got_back.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    const uint8_t* host_blocks = pool.data() + misalign;
    for (int64_t i = 0; i < count; ++i) {
      EXPECT_TRUE(std::equal(got_staging.begin() + i * block_bytes, got_staging.begin() + (i + 1) * block_bytes,
                             host_blocks + ids[i] * block_bytes))
          << "gathered block " << i << ", " << block_bytes << " bytes, offset " << misalign;
    }
    for (int64_t b = 0; b < kPoolBlocks; ++b) {
      const bool listed = std::find(ids.begin(), ids.end(), b) != ids.end();
      for (int64_t i = 0; i < block_bytes; ++i) {
        const uint8_t want = listed ? host_blocks[b * block_bytes + i] : uint8_t{0xCD};
        ASSERT_EQ(got_back[b * block_bytes + i], want) << "block " << b << " byte " << i << ", offset " << misalign;
      }
    }
  }
  EXPECT_TRUE(CopyBlocks(nullptr, nullptr, nullptr, nullptr, 0, 16, nullptr).ok());
  EXPECT_FALSE(CopyBlocks(nullptr, nullptr, nullptr, nullptr, 1, 16, nullptr).ok());
  EXPECT_FALSE(CopyBlocks(d_ids.data(), nullptr, d_ids.data(), nullptr, 1, 0, nullptr).ok());
}

TEST(Sampling, ArgmaxTakesLowestIndexOfTheMaximum) {
  STRATA_SKIP_WITHOUT_GPU();
  std::mt19937 rng(8);
  constexpr int64_t kRows = 5, kVocab = 128256;
  std::vector<float> logits = testing::RandomFloats(kRows * kVocab, rng);
  logits[1 * kVocab + 77] = 50.0f;
  logits[1 * kVocab + 99999] = 50.0f;    // tie: 77 wins
  logits[2 * kVocab + 5] = NAN;          // never chosen
  logits[3 * kVocab + kVocab - 1] = 40.0f;
  DeviceArray d(DType::kF32, logits);
  DeviceBuffer ids = *DeviceBuffer::Allocate(kRows * 4);
  ASSERT_TRUE(ArgmaxRows(d.data<float>(), kRows, kVocab, ids.data<int32_t>(), nullptr).ok());
  std::vector<int32_t> got(kRows);
  ASSERT_EQ(cudaMemcpy(got.data(), ids.data(), kRows * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int64_t r = 0; r < kRows; ++r) {
    int32_t best = -1;
    for (int64_t i = 0; i < kVocab; ++i) {
      const float x = logits[r * kVocab + i];
      if (!std::isnan(x) && (best < 0 || x > logits[r * kVocab + best])) best = static_cast<int32_t>(i);
    }
    EXPECT_EQ(got[r], best) << "row " << r;
  }
  EXPECT_EQ(got[1], 77);
}

// Many rows of one distribution: draws stay inside the top-k / top-p set and follow its renormalized
// probabilities.
TEST(Sampling, TopKTopPDrawsFollowTheRestrictedDistribution) {
  STRATA_SKIP_WITHOUT_GPU();
  constexpr int64_t kRows = 4096, kVocab = 1000;
  std::vector<float> row(kVocab, -5.0f);
  const std::vector<float> top = {3.0f, 2.5f, 2.0f, 1.0f, 0.5f};  // ids 10, 20, 30, 40, 50
  for (size_t i = 0; i < top.size(); ++i) row[10 * (i + 1)] = top[i];
  std::vector<float> logits;
  for (int64_t r = 0; r < kRows; ++r) logits.insert(logits.end(), row.begin(), row.end());
  DeviceArray d(DType::kF32, logits);
  DeviceBuffer ids = *DeviceBuffer::Allocate(kRows * 4);
  auto draw = [&](const SampleOptions& o) {
    EXPECT_TRUE(SampleRows(d.data<float>(), kRows, kVocab, o, ids.data<int32_t>(), nullptr).ok());
    std::vector<int32_t> got(kRows);
    EXPECT_EQ(cudaMemcpy(got.data(), ids.data(), kRows * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    std::map<int32_t, int> counts;
    for (int32_t id : got) ++counts[id];
    return counts;
  };
  // top-k 3: only ids 10, 20, 30, in proportion exp(3) : exp(2.5) : exp(2).
  auto counts = draw({.temperature = 1.0f, .top_k = 3, .top_p = 1.0f, .seed = 1});
  EXPECT_EQ(counts.size(), 3u);
  const double z = std::exp(3.0) + std::exp(2.5) + std::exp(2.0);
  for (auto [id, logit] : {std::pair{10, 3.0}, {20, 2.5}, {30, 2.0}}) {
    const double expected = kRows * std::exp(logit) / z;
    EXPECT_NEAR(counts[id], expected, 5 * std::sqrt(expected)) << id;
  }
  // top-p 0.5 at temperature 0.5: the first id alone holds more than half: always 10.
  counts = draw({.temperature = 0.5f, .top_k = 0, .top_p = 0.5f, .seed = 2});
  EXPECT_EQ(counts.size(), 1u);
  EXPECT_EQ(counts[10], kRows);
  // top-k 1 is greedy.
  counts = draw({.temperature = 2.0f, .top_k = 1, .top_p = 1.0f, .seed = 3});
  EXPECT_EQ(counts[10], kRows);
  // The same seed and step give the same draws; another step differs.
  SampleOptions o{.temperature = 1.0f, .top_k = 0, .top_p = 0.9f, .seed = 4, .step = 0};
  const auto a = draw(o), b = draw(o);
  EXPECT_EQ(a, b);
  EXPECT_FALSE(SampleRows(d.data<float>(), kRows, kVocab, {.temperature = 0.0f}, ids.data<int32_t>(), nullptr).ok());
}

}  // namespace
}  // namespace strata::kernels
