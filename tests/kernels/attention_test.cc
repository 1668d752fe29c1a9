// Attention kernels against a float64 CPU reference over the same (dtype-rounded) inputs: the tensor-core
// prefill kernel, cuDNN's fused attention, flash-decoding, batched decode, chunked attention merged through
// the LSE.
#include "kernels/attention.h"

#include <cmath>
#include <cstddef>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cudnn_attention.h"
#include "tests/kernels/attention_reference.h"
#include "tests/kernels/device_test_util.h"

namespace strata::kernels {
namespace {

using testing::DeviceArray;
using testing::MakeProblem;
using testing::Problem;
using testing::Reference;
using testing::Shape;

struct DeviceProblem {
  DeviceArray q, k, v, out;
  DeviceArray lse;
  DeviceProblem(const Problem& p, DType dtype)
      : q(dtype, p.q), k(dtype, p.k), v(dtype, p.v), out(dtype, p.q.size()),
        lse(DType::kF32, p.s.rows * p.s.num_heads) {}

  AttentionArgs Args(const Shape& s, DType dtype, float scale) const {
    AttentionArgs a;
    a.dtype = dtype;
    a.q = q.data();
    a.q_row_stride = s.num_heads * s.head_dim;
    a.k = k.data();
    a.v = v.data();
    a.kv_head_stride = s.capacity;
    a.kv_begin = 0;
    a.kv_end = s.first_position + s.rows;
    a.out = out.data();
    a.out_row_stride = s.num_heads * s.head_dim;
    a.lse = lse.data<float>();
    a.rows = s.rows;
    a.num_heads = s.num_heads;
    a.num_kv_heads = s.num_kv_heads;
    a.head_dim = s.head_dim;
    a.first_position = s.first_position;
    a.window = s.window;
    a.scale = scale;
    return a;
  }
};

enum class Path { kFlash, kCudnn, kSplitKv };

struct Case {
  Path path;
  DType dtype;
  Shape shape;
  int splits;  // kSplitKv only
  FlashTiling tiling = kDefaultFlashTiling;  // kFlash only
};

std::string CaseName(const Case& c) {
  const Shape& s = c.shape;
  return std::string(c.path == Path::kFlash ? "flash" : c.path == Path::kCudnn ? "cudnn" : "splitkv") + "_" + std::string(DTypeName(c.dtype)) + "_rows" +
         std::to_string(s.rows) + "_h" + std::to_string(s.num_heads) + "x" + std::to_string(s.num_kv_heads) + "_d" +
         std::to_string(s.head_dim) + "_pos" + std::to_string(s.first_position) + "_win" + std::to_string(s.window) +
         "_split" + std::to_string(c.splits) +
         (c.path == Path::kFlash && c.tiling == FlashTiling::k4Warps32Rows ? "_4x32" : "");
}

// gtest prints a parameter in test listings; the default dumps its bytes, padding included.
void PrintTo(const Case& c, std::ostream* os) { *os << CaseName(c); }

class AttentionTest : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionTest, MatchesFloat64Reference) {
  STRATA_SKIP_WITHOUT_GPU();
  const Case& c = GetParam();
  const Shape& s = c.shape;
  std::mt19937 rng(1234 + s.rows * 7 + s.head_dim);
  const Problem p = MakeProblem(s, c.dtype, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  DeviceProblem d(p, c.dtype);
  const AttentionArgs args = d.Args(s, c.dtype, scale);
  DeviceBuffer workspace;
  if (c.path == Path::kFlash) {
    ASSERT_TRUE(FlashAttentionPrefill(args, nullptr, c.tiling).ok());
  } else if (c.path == Path::kCudnn) {
    if (!CudnnAttentionLoaded()) GTEST_SKIP() << "cuDNN not loaded: " << CudnnDescription();
    ASSERT_TRUE(CudnnServes(args));
    const absl::Status status = CudnnAttention(args, nullptr);
    ASSERT_TRUE(status.ok()) << status;
  } else {
    auto ws = DeviceBuffer::Allocate(SplitKvWorkspaceBytes(args, c.splits));
    ASSERT_TRUE(ws.ok());
    workspace = *std::move(ws);
    const absl::Status status = SplitKvAttention(args, c.splits, workspace.data(), workspace.bytes(), nullptr);
    ASSERT_TRUE(status.ok()) << status;
  }
  std::vector<float> out, lse;
  Reference(p, 0, s.first_position + s.rows, scale, out, lse);
  const double error = testing::RelativeError(d.out.Get(), out);
  EXPECT_LT(error, testing::ToleranceFor(c.dtype)) << CaseName(c);
  EXPECT_LT(testing::MaxAbsError(d.lse.Get(), lse), c.dtype == DType::kBF16 ? 2e-3 : 1e-4) << CaseName(c);
  std::printf("%s: rel L2 %.3g\n", CaseName(c).c_str(), error);
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  // Prefill on tensor cores: head_dim 64/128, GQA ratios 1/4/8, lengths that are not tile multiples, a
  // chunk starting past 0 (mini-sequence prefill), a sliding window.
  for (int64_t hd : {64, 128}) {
    for (int64_t ratio : {1, 4, 8}) {
      cases.push_back({Path::kFlash, DType::kBF16, {333, 8, 8 / ratio, hd, 0, 333, 0}, 1});
    }
    cases.push_back({Path::kFlash, DType::kBF16, {130, 8, 2, hd, 211, 400, 0}, 1});
    cases.push_back({Path::kFlash, DType::kBF16, {257, 4, 1, hd, 0, 300, 64}, 1});
    cases.push_back({Path::kFlash, DType::kBF16, {17, 4, 4, hd, 1000, 1017, 0}, 1});
  }
  // Split-KV: decode rows over long contexts (flash-decoding), tiny heads (16, as the test models), F32.
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (int64_t hd : {16, 64, 128}) {
      cases.push_back({Path::kSplitKv, dtype, {1, 8, 1, hd, 4999, 5000, 0}, 13});
      cases.push_back({Path::kSplitKv, dtype, {3, 8, 2, hd, 700, 703, 0}, 1});
    }
    cases.push_back({Path::kSplitKv, dtype, {45, 4, 4, 96, 0, 45, 0}, 1});
    // Groups wider than 8 and rows that are not whole 16-byte vectors take the per-head kernel.
    cases.push_back({Path::kSplitKv, dtype, {1, 16, 1, 64, 2000, 2001, 0}, 7});
    cases.push_back({Path::kSplitKv, dtype, {3, 4, 2, 20, 50, 53, 0}, 2});
    cases.push_back({Path::kSplitKv, dtype, {2, 8, 8, 64, 3000, 3002, 100}, 5});
  }
  // Every tensor-core case again with the other tiling, and on cuDNN where it serves the shape (no window).
  const size_t count = cases.size();
  for (size_t i = 0; i < count; ++i) {
    if (cases[i].path != Path::kFlash) continue;
    Case other = cases[i];
    other.tiling = FlashTiling::k4Warps32Rows;
    cases.push_back(other);
    if (cases[i].shape.window != 0) continue;
    other.path = Path::kCudnn;
    other.tiling = kDefaultFlashTiling;
    cases.push_back(other);
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Kernels, AttentionTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return CaseName(info.param); });

// Attention over [0, c) and over [c, end) from a separate chunk buffer, merged through the LSE, equals
// one-shot attention over [0, end).
void CheckChunkedMerge(DType dtype, int64_t head_dim, int64_t rows, int64_t first_position, int64_t split_key) {
  const Shape s{rows, 8, 2, head_dim, first_position, first_position + rows, 0};
  std::mt19937 rng(99 + head_dim + rows);
  const Problem p = MakeProblem(s, dtype, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  DeviceProblem whole(p, dtype), first(p, dtype);
  ASSERT_TRUE(Attention(whole.Args(s, dtype, scale), nullptr, 0, nullptr).ok());

  AttentionArgs a = first.Args(s, dtype, scale);
  a.kv_end = split_key;
  ASSERT_TRUE(Attention(a, nullptr, 0, nullptr).ok());

  // The second chunk in its own buffer: keys [split_key, end) of every head, head stride = chunk length.
  const int64_t chunk = s.first_position + s.rows - split_key;
  std::vector<float> ck(s.num_kv_heads * chunk * head_dim), cv(ck.size());
  for (int64_t h = 0; h < s.num_kv_heads; ++h) {
    for (int64_t t = 0; t < chunk; ++t) {
      for (int64_t d = 0; d < head_dim; ++d) {
        ck[(h * chunk + t) * head_dim + d] = p.k[(h * s.capacity + split_key + t) * head_dim + d];
        cv[(h * chunk + t) * head_dim + d] = p.v[(h * s.capacity + split_key + t) * head_dim + d];
      }
    }
  }
  DeviceArray chunk_k(dtype, ck), chunk_v(dtype, cv), part_out(dtype, p.q.size()), part_lse(DType::kF32, rows * 8);
  AttentionArgs b = a;
  b.k = chunk_k.data();
  b.v = chunk_v.data();
  b.kv_head_stride = chunk;
  b.kv_begin = split_key;
  b.kv_end = s.first_position + s.rows;
  b.out = part_out.data();
  b.lse = part_lse.data<float>();
  ASSERT_TRUE(Attention(b, nullptr, 0, nullptr).ok());
  ASSERT_TRUE(MergeAttention(dtype, first.out.data(), first.lse.data<float>(), part_out.data(),
                             part_lse.data<float>(), rows, 8, head_dim, 8 * head_dim, nullptr)
                  .ok());

  std::vector<float> out, lse;
  Reference(p, 0, s.first_position + s.rows, scale, out, lse);
  const double merged_error = testing::RelativeError(first.out.Get(), out);
  const double whole_error = testing::RelativeError(whole.out.Get(), out);
  // Merging adds one more rounding of the output to dtype, nothing else.
  EXPECT_LT(merged_error, testing::ToleranceFor(dtype));
  EXPECT_LT(testing::RelativeError(first.out.Get(), whole.out.Get()), 2 * testing::ToleranceFor(dtype));
  EXPECT_LT(testing::MaxAbsError(first.lse.Get(), lse), dtype == DType::kBF16 ? 2e-3 : 1e-4);
  std::printf("chunked %s d%lld rows %lld split at %lld: merged %.3g, one-shot %.3g\n",
              std::string(DTypeName(dtype)).c_str(), static_cast<long long>(head_dim), static_cast<long long>(rows),
              static_cast<long long>(split_key), merged_error, whole_error);
}

// cuDNN over a chunk of keys wholly in the queries' past, [kv_begin, kv_end) of a larger cache (offloaded KV
// streamed back): every row sees every key, no mask.
TEST(CudnnAttention, ChunkInThePastMatchesReference) {
  STRATA_SKIP_WITHOUT_GPU();
  if (!CudnnAttentionLoaded()) GTEST_SKIP() << "cuDNN not loaded: " << CudnnDescription();
  const Shape s{64, 8, 2, 128, 300, 364, 0};
  std::mt19937 rng(7);
  const Problem p = MakeProblem(s, DType::kBF16, rng);
  const float scale = 1.0f / std::sqrt(128.0f);
  DeviceProblem d(p, DType::kBF16);
  AttentionArgs a = d.Args(s, DType::kBF16, scale);
  a.kv_begin = 50;
  a.kv_end = 200;
  a.k = static_cast<const std::byte*>(a.k) + a.kv_begin * s.head_dim * 2;
  a.v = static_cast<const std::byte*>(a.v) + a.kv_begin * s.head_dim * 2;
  ASSERT_TRUE(CudnnServes(a));
  const absl::Status status = CudnnAttention(a, nullptr);
  ASSERT_TRUE(status.ok()) << status;
  std::vector<float> out, lse;
  Reference(p, a.kv_begin, a.kv_end, scale, out, lse);
  EXPECT_LT(testing::RelativeError(d.out.Get(), out), testing::kBf16Tolerance);
  EXPECT_LT(testing::MaxAbsError(d.lse.Get(), lse), 2e-3);
  // Windows, paged K/V and rows that see no key stay on the own kernels.
  a.window = 16;
  EXPECT_FALSE(CudnnServes(a));
  a.window = 0;
  a.kv_begin = s.first_position + 1;
  EXPECT_FALSE(CudnnServes(a));
}

TEST(AttentionMerge, ChunkedEqualsOneShotOnTensorCores) {
  STRATA_SKIP_WITHOUT_GPU();
  CheckChunkedMerge(DType::kBF16, 128, 200, 100, 77);   // a chunk boundary inside the queries' range
  CheckChunkedMerge(DType::kBF16, 64, 150, 0, 150);     // the whole prompt then nothing: -inf merges
  CheckChunkedMerge(DType::kBF16, 128, 100, 500, 550);  // the split falls among the queries themselves
}

TEST(AttentionMerge, ChunkedEqualsOneShotInFloat32) {
  STRATA_SKIP_WITHOUT_GPU();
  CheckChunkedMerge(DType::kF32, 16, 5, 300, 123);
  CheckChunkedMerge(DType::kF32, 128, 3, 2000, 1024);
}

TEST(AttentionBatch, BatchedDecodeMatchesEachProblem) {
  STRATA_SKIP_WITHOUT_GPU();
  const Shape s{1, 32, 8, 128, 2999, 3000, 0};
  constexpr int kBatch = 3;
  std::mt19937 rng(7);
  std::vector<Problem> problems;
  std::vector<float> q, k, v;
  for (int b = 0; b < kBatch; ++b) {
    problems.push_back(MakeProblem(s, DType::kBF16, rng));
    q.insert(q.end(), problems.back().q.begin(), problems.back().q.end());
    k.insert(k.end(), problems.back().k.begin(), problems.back().k.end());
    v.insert(v.end(), problems.back().v.begin(), problems.back().v.end());
  }
  DeviceArray dq(DType::kBF16, q), dk(DType::kBF16, k), dv(DType::kBF16, v), dout(DType::kBF16, q.size());
  AttentionArgs a;
  a.dtype = DType::kBF16;
  a.q = dq.data();
  a.q_row_stride = s.num_heads * s.head_dim;
  a.k = dk.data();
  a.v = dv.data();
  a.kv_head_stride = s.capacity;
  a.kv_end = s.first_position + 1;
  a.out = dout.data();
  a.out_row_stride = a.q_row_stride;
  a.rows = 1;
  a.num_heads = s.num_heads;
  a.num_kv_heads = s.num_kv_heads;
  a.head_dim = s.head_dim;
  a.first_position = s.first_position;
  a.scale = 1.0f / std::sqrt(128.0f);
  a.batch = kBatch;
  a.q_batch_stride = s.num_heads * s.head_dim;
  a.out_batch_stride = a.q_batch_stride;
  a.kv_batch_stride = s.num_kv_heads * s.capacity * s.head_dim;
  auto ws = DeviceBuffer::Allocate(size_t{16} << 20);
  ASSERT_TRUE(ws.ok());
  ASSERT_TRUE(Attention(a, ws->data(), ws->bytes(), nullptr).ok());
  const std::vector<float> got = dout.Get();
  for (int b = 0; b < kBatch; ++b) {
    std::vector<float> out, lse;
    Reference(problems[b], 0, s.first_position + 1, a.scale, out, lse);
    const std::vector<float> mine(got.begin() + b * out.size(), got.begin() + (b + 1) * out.size());
    EXPECT_LT(testing::RelativeError(mine, out), testing::kBf16Tolerance) << "batch " << b;
  }
}

TEST(AttentionArgs, RejectsBadShapes) {
  AttentionArgs a;
  EXPECT_FALSE(ValidateAttention(a).ok());  // no pointers
  int dummy = 0;
  a.q = a.k = a.v = &dummy;
  a.out = &dummy;
  a.rows = 4;
  a.num_heads = 6;
  a.num_kv_heads = 4;  // not a divisor
  a.head_dim = 64;
  a.q_row_stride = a.out_row_stride = 6 * 64;
  a.kv_head_stride = 10;
  a.kv_end = 4;
  EXPECT_EQ(ValidateAttention(a).code(), absl::StatusCode::kInvalidArgument);
  a.num_kv_heads = 3;
  EXPECT_TRUE(ValidateAttention(a).ok());
  a.kv_end = 11;  // past the head stride
  EXPECT_FALSE(ValidateAttention(a).ok());
}

}  // namespace
}  // namespace strata::kernels
