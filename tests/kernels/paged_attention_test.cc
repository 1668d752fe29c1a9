// Paged KV (block tables) in the attention kernels: a contiguous problem scattered into a pool through a
// shuffled block table gives the float64 reference's output and LSE on every path (tensor-core prefill after a
// cached prefix, split-KV and grouped decode, batched decode at per-sequence positions); the argument checks.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/attention.h"
#include "tests/kernels/attention_reference.h"
#include "tests/kernels/device_test_util.h"

namespace strata::kernels {
namespace {

using testing::DeviceArray;
using testing::MakeProblem;
using testing::Problem;
using testing::Reference;
using testing::Shape;

// A pool in the engine's layout [block][layer][K|V][kv_head][token][head_dim] holding several sequences, each
// through its own row of a block table, and the AttentionArgs fields that address it.
struct PagedKv {
  static constexpr int64_t kLayers = 2, kLayer = 1;  // the sequences live in layer 1; layer 0 stays NaN

  DeviceArray pool;
  DeviceBuffer table;
  int64_t table_stride, block_tokens, block_stride, k_offset, v_offset;  // offsets in elements

  void Fill(AttentionArgs& a) const {
    const size_t element = DTypeSize(pool.dtype());
    a.k = static_cast<const char*>(pool.data()) + k_offset * element;
    a.v = static_cast<const char*>(pool.data()) + v_offset * element;
    a.kv_head_stride = 0;  // unused when paged
    a.kv_batch_stride = 0;
    a.kv_begin = 0;
    a.block_table = table.data<int32_t>();
    a.block_table_stride = table_stride;
    a.block_tokens = block_tokens;
    a.block_stride = block_stride;
  }
};

// Scatters keys [0, lengths[b]) of problems[b] (k/v [kv_heads][capacity][head_dim]) into a fresh pool. Blocks
// are handed out in shuffled order with spares; every row no sequence owns (spare blocks, the tail of a last
// block, the other layer) is NaN and unused table entries name a NaN block, so a wrong read shows as NaN.
PagedKv MakePagedKv(DType dtype, const std::vector<const Problem*>& problems, const std::vector<int64_t>& lengths,
                    int64_t block_tokens, std::mt19937& rng) {
  const Shape& s = problems[0]->s;
  const int64_t hd = s.head_dim, kv_heads = s.num_kv_heads;
  int64_t needed = 0, widest = 0;
  for (int64_t length : lengths) {
    needed += (length + block_tokens - 1) / block_tokens;
    widest = std::max(widest, (length + block_tokens - 1) / block_tokens);
  }
  const int64_t table_stride = widest + 1;  // a spare entry per row: the kernels must not read it
  const int64_t num_blocks = needed + 3;
  std::vector<int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  const int32_t poisoned_block = ids.back();
  std::vector<int32_t> table(lengths.size() * table_stride, poisoned_block);
  size_t next = 0;
  for (size_t b = 0; b < lengths.size(); ++b) {
    for (int64_t i = 0; i < (lengths[b] + block_tokens - 1) / block_tokens; ++i) {
      table[b * table_stride + i] = ids[next++];
    }
  }
  const int64_t block_stride = PagedKv::kLayers * 2 * kv_heads * block_tokens;  // rows
  const int64_t k_offset = (PagedKv::kLayer * 2 + 0) * kv_heads * block_tokens * hd;
  const int64_t v_offset = (PagedKv::kLayer * 2 + 1) * kv_heads * block_tokens * hd;
  std::vector<float> pool(num_blocks * block_stride * hd, NAN);
  for (size_t b = 0; b < lengths.size(); ++b) {
    const Problem& p = *problems[b];
    for (int64_t h = 0; h < kv_heads; ++h) {
      for (int64_t j = 0; j < lengths[b]; ++j) {
        const int64_t block = table[b * table_stride + j / block_tokens];
        const int64_t row = block * block_stride + h * block_tokens + j % block_tokens;
        for (int64_t d = 0; d < hd; ++d) {
          pool[k_offset + row * hd + d] = p.k[(h * p.s.capacity + j) * hd + d];
          pool[v_offset + row * hd + d] = p.v[(h * p.s.capacity + j) * hd + d];
        }
      }
    }
  }
  return PagedKv{DeviceArray(dtype, pool),
                 testing::DeviceInt32s(table),
                 table_stride,
                 block_tokens,
                 block_stride,
                 k_offset,
                 v_offset};
}

// Everything but K/V for `batch` problems of shape s stored back to back in q, out and lse.
AttentionArgs QueryArgs(const Shape& s, DType dtype, int64_t batch, const DeviceArray& q, const DeviceArray& out,
                        const DeviceArray& lse) {
  AttentionArgs a;
  a.dtype = dtype;
  a.q = q.data();
  a.q_row_stride = s.num_heads * s.head_dim;
  a.out = out.data();
  a.out_row_stride = a.q_row_stride;
  a.lse = lse.data<float>();
  a.rows = s.rows;
  a.num_heads = s.num_heads;
  a.num_kv_heads = s.num_kv_heads;
  a.head_dim = s.head_dim;
  a.first_position = s.first_position;
  a.kv_end = s.first_position + s.rows;
  a.window = s.window;
  a.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  a.batch = batch;
  a.q_batch_stride = s.rows * a.q_row_stride;
  a.out_batch_stride = a.q_batch_stride;
  return a;
}

std::string ShapeName(const Shape& s) {
  return "rows" + std::to_string(s.rows) + "_h" + std::to_string(s.num_heads) + "x" + std::to_string(s.num_kv_heads) +
         "_d" + std::to_string(s.head_dim) + "_pos" + std::to_string(s.first_position) + "_win" +
         std::to_string(s.window);
}

double LseTolerance(DType dtype) { return dtype == DType::kBF16 ? 2e-3 : 1e-4; }

// One problem through the paged cache on `run`'s path against the reference over keys [0, position + rows).
template <typename Run>
void CheckPagedProblem(DType dtype, const Shape& s, int64_t block_tokens, uint32_t seed, Run run) {
  std::mt19937 rng(seed);
  const Problem p = MakeProblem(s, dtype, rng);
  const int64_t kv_end = s.first_position + s.rows;
  const PagedKv kv = MakePagedKv(dtype, {&p}, {kv_end}, block_tokens, rng);
  DeviceArray q(dtype, p.q), out(dtype, p.q.size()), lse(DType::kF32, s.rows * s.num_heads);
  AttentionArgs a = QueryArgs(s, dtype, 1, q, out, lse);
  kv.Fill(a);
  run(a);
  std::vector<float> want, want_lse;
  Reference(p, 0, kv_end, a.scale, want, want_lse);
  const double error = testing::RelativeError(out.Get(), want);
  EXPECT_LT(error, testing::ToleranceFor(dtype));
  EXPECT_LT(testing::MaxAbsError(lse.Get(), want_lse), LseTolerance(dtype));
  std::printf("paged %s %s block %lld: rel L2 %.3g\n", std::string(DTypeName(dtype)).c_str(), ShapeName(s).c_str(),
              static_cast<long long>(block_tokens), error);
}

struct PrefillCase {
  Shape shape;
  int64_t block_tokens;
  FlashTiling tiling;
};

std::string PrefillName(const PrefillCase& c) {
  return ShapeName(c.shape) + "_block" + std::to_string(c.block_tokens) +
         (c.tiling == FlashTiling::k4Warps32Rows ? "_4x32" : "_8x16");
}
void PrintTo(const PrefillCase& c, std::ostream* os) { *os << PrefillName(c); }

class PagedPrefill : public ::testing::TestWithParam<PrefillCase> {};

TEST_P(PagedPrefill, MatchesContiguousReference) {
  STRATA_SKIP_WITHOUT_GPU();
  const PrefillCase& c = GetParam();
  CheckPagedProblem(DType::kBF16, c.shape, c.block_tokens, 11 + c.shape.rows, [&](const AttentionArgs& a) {
    const absl::Status status = FlashAttentionPrefill(a, nullptr, c.tiling);
    ASSERT_TRUE(status.ok()) << status;
  });
}

std::vector<PrefillCase> PrefillCases() {
  std::vector<PrefillCase> cases;
  for (FlashTiling tiling : {FlashTiling::k8Warps16Rows, FlashTiling::k4Warps32Rows}) {
    // Chunked prefill after a cached prefix of 211 tokens: the queries start mid-block, key tiles span blocks.
    cases.push_back({{130, 8, 2, 64, 211, 341, 0}, 16, tiling});
    cases.push_back({{130, 8, 2, 128, 211, 341, 0}, 16, tiling});
    // Sliding windows, from a prefix and from position 0.
    cases.push_back({{200, 4, 1, 128, 100, 300, 48}, 16, tiling});
    cases.push_back({{257, 8, 8, 64, 0, 257, 64}, 16, tiling});
    // Larger blocks.
    cases.push_back({{96, 8, 4, 128, 333, 429, 0}, 32, tiling});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Kernels, PagedPrefill, ::testing::ValuesIn(PrefillCases()),
                         [](const auto& info) { return PrefillName(info.param); });

struct DecodeCase {
  DType dtype;
  Shape shape;
  int splits;
  int64_t block_tokens;
};

std::string DecodeName(const DecodeCase& c) {
  return std::string(DTypeName(c.dtype)) + "_" + ShapeName(c.shape) + "_split" + std::to_string(c.splits) + "_block" +
         std::to_string(c.block_tokens);
}
void PrintTo(const DecodeCase& c, std::ostream* os) { *os << DecodeName(c); }

class PagedDecode : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(PagedDecode, MatchesContiguousReference) {
  STRATA_SKIP_WITHOUT_GPU();
  const DecodeCase& c = GetParam();
  CheckPagedProblem(c.dtype, c.shape, c.block_tokens, 23 + c.shape.head_dim, [&](const AttentionArgs& a) {
    auto workspace = DeviceBuffer::Allocate(SplitKvWorkspaceBytes(a, c.splits));
    ASSERT_TRUE(workspace.ok());
    const absl::Status status = SplitKvAttention(a, c.splits, workspace->data(), workspace->bytes(), nullptr);
    ASSERT_TRUE(status.ok()) << status;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // before the workspace is freed
  });
}

std::vector<DecodeCase> DecodeCases() {
  std::vector<DecodeCase> cases;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    // Long contexts split 13 ways on the grouped kernel (GQA 4), with 16- and 32-token blocks.
    cases.push_back({dtype, {1, 8, 2, 128, 4999, 5000, 0}, 13, 16});
    cases.push_back({dtype, {1, 8, 2, 64, 4999, 5000, 0}, 13, 32});
    // Groups wider than 8 and rows that are not whole 16-byte vectors (BF16 head_dim 20) take the per-head kernel.
    cases.push_back({dtype, {1, 16, 1, 64, 2000, 2001, 0}, 7, 16});
    cases.push_back({dtype, {3, 4, 2, 20, 50, 53, 0}, 2, 16});
    // A sliding window over a long context.
    cases.push_back({dtype, {2, 8, 8, 64, 3000, 3002, 100}, 5, 16});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Kernels, PagedDecode, ::testing::ValuesIn(DecodeCases()),
                         [](const auto& info) { return DecodeName(info.param); });

// Sequences of different lengths in one launch: batch item b's rows start at positions[b], read on the device;
// the host first_position / kv_end are the largest (upper bounds). K/V are paged (each item its own table row)
// or contiguous ([batch][kv_heads][capacity][head_dim]). Returns after checking each item against the reference.
enum class Layout { kContiguous, kPaged };

template <typename Run>
void CheckBatchPositions(DType dtype, Layout layout, Shape s, const std::vector<int64_t>& positions,
                         int64_t block_tokens, Run run) {
  const int64_t batch = static_cast<int64_t>(positions.size());
  const int64_t last = *std::max_element(positions.begin(), positions.end());
  s.first_position = last;
  s.capacity = last + s.rows;
  std::mt19937 rng(31 + s.num_kv_heads);
  std::vector<Problem> problems;
  std::vector<float> q, k, v;
  for (int64_t b = 0; b < batch; ++b) {
    problems.push_back(MakeProblem(s, dtype, rng));
    problems.back().s.first_position = positions[b];
    q.insert(q.end(), problems.back().q.begin(), problems.back().q.end());
    k.insert(k.end(), problems.back().k.begin(), problems.back().k.end());
    v.insert(v.end(), problems.back().v.begin(), problems.back().v.end());
  }
  DeviceArray dq(dtype, q), out(dtype, q.size()), lse(DType::kF32, batch * s.num_heads * s.rows);
  AttentionArgs a = QueryArgs(s, dtype, batch, dq, out, lse);
  std::vector<int32_t> host_positions(positions.begin(), positions.end());
  const DeviceBuffer device_positions = testing::DeviceInt32s(host_positions);
  a.batch_positions = device_positions.data<int32_t>();

  std::vector<const Problem*> pointers;
  std::vector<int64_t> lengths;
  for (int64_t b = 0; b < batch; ++b) {
    pointers.push_back(&problems[b]);
    lengths.push_back(positions[b] + s.rows);
  }
  std::optional<PagedKv> paged;
  std::optional<DeviceArray> dk, dv;
  if (layout == Layout::kPaged) {
    paged.emplace(MakePagedKv(dtype, pointers, lengths, block_tokens, rng));
    paged->Fill(a);
  } else {
    dk.emplace(dtype, k);
    dv.emplace(dtype, v);
    a.k = dk->data();
    a.v = dv->data();
    a.kv_head_stride = s.capacity;
    a.kv_batch_stride = s.num_kv_heads * s.capacity * s.head_dim;
  }
  run(a);

  const std::vector<float> got = out.Get(), got_lse = lse.Get();
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<float> want, want_lse;
    Reference(problems[b], 0, lengths[b], a.scale, want, want_lse);
    const std::vector<float> mine(got.begin() + b * want.size(), got.begin() + (b + 1) * want.size());
    const std::vector<float> mine_lse(got_lse.begin() + b * want_lse.size(),
                                      got_lse.begin() + (b + 1) * want_lse.size());
    EXPECT_LT(testing::RelativeError(mine, want), testing::ToleranceFor(dtype)) << "batch item " << b;
    EXPECT_LT(testing::MaxAbsError(mine_lse, want_lse), LseTolerance(dtype)) << "batch item " << b;
  }
}

struct BatchCase {
  DType dtype;
  Layout layout;
  int64_t num_kv_heads;
};

std::string BatchName(const BatchCase& c) {
  return std::string(DTypeName(c.dtype)) + (c.layout == Layout::kPaged ? "_paged" : "_contiguous") + "_kv" +
         std::to_string(c.num_kv_heads);
}
void PrintTo(const BatchCase& c, std::ostream* os) { *os << BatchName(c); }

class BatchedDecodeAtPositions : public ::testing::TestWithParam<BatchCase> {};

// Four sequences of 38 to 3000 keys decode one row each; the splits come from the longest (host upper bound).
// 8 KV heads take the grouped kernel, 1 KV head (group 32) the per-head kernel.
TEST_P(BatchedDecodeAtPositions, MatchesEachSequence) {
  STRATA_SKIP_WITHOUT_GPU();
  const BatchCase& c = GetParam();
  const Shape s{1, 32, c.num_kv_heads, 128, 0, 0, 0};
  CheckBatchPositions(c.dtype, c.layout, s, {37, 999, 2999, 512}, 16, [&](const AttentionArgs& a) {
    auto workspace = DeviceBuffer::Allocate(size_t{16} << 20);
    ASSERT_TRUE(workspace.ok());
    EXPECT_GT(AttentionSplits(a, workspace->bytes()), 1);
    const absl::Status status = Attention(a, workspace->data(), workspace->bytes(), nullptr);
    ASSERT_TRUE(status.ok()) << status;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // before the workspace is freed
  });
}

INSTANTIATE_TEST_SUITE_P(
    Kernels, BatchedDecodeAtPositions,
    ::testing::Values(BatchCase{DType::kF32, Layout::kPaged, 8}, BatchCase{DType::kBF16, Layout::kPaged, 8},
                      BatchCase{DType::kF32, Layout::kPaged, 1}, BatchCase{DType::kBF16, Layout::kPaged, 1},
                      BatchCase{DType::kF32, Layout::kContiguous, 8}, BatchCase{DType::kBF16, Layout::kContiguous, 8}),
    [](const auto& info) { return BatchName(info.param); });

// Chunked prefill of three sequences at different positions in one tensor-core launch.
TEST(PagedPrefillAtPositions, MatchesEachSequence) {
  STRATA_SKIP_WITHOUT_GPU();
  for (FlashTiling tiling : {FlashTiling::k8Warps16Rows, FlashTiling::k4Warps32Rows}) {
    for (Layout layout : {Layout::kPaged, Layout::kContiguous}) {
      const Shape s{40, 8, 2, 128, 0, 0, 0};
      CheckBatchPositions(DType::kBF16, layout, s, {0, 150, 77}, 16, [&](const AttentionArgs& a) {
        const absl::Status status = FlashAttentionPrefill(a, nullptr, tiling);
        ASSERT_TRUE(status.ok()) << status;
      });
    }
  }
}

TEST(PagedAttentionArgs, ValidatesPagedAndPositions) {
  int dummy = 0;
  const int32_t table[2] = {0, 1};
  const int64_t device_position = 0;
  AttentionArgs a;
  a.q = a.k = a.v = &dummy;
  a.out = &dummy;
  a.rows = 1;
  a.num_heads = 8;
  a.num_kv_heads = 2;
  a.head_dim = 64;
  a.q_row_stride = a.out_row_stride = 8 * 64;
  a.first_position = 99;
  a.kv_end = 100;
  a.block_table = table;
  a.block_tokens = 16;
  a.block_stride = 2 * 16;
  EXPECT_TRUE(ValidateAttention(a).ok()) << "kv_head_stride is unused when paged";
  a.kv_begin = 16;
  EXPECT_FALSE(ValidateAttention(a).ok()) << "paged keys start at 0";
  a.kv_begin = 0;
  a.block_stride = 2 * 16 - 1;
  EXPECT_FALSE(ValidateAttention(a).ok()) << "a block must hold every KV head";
  a.block_stride = 2 * 16;
  a.block_tokens = 0;
  EXPECT_FALSE(ValidateAttention(a).ok());
  a.block_tokens = 16;
  a.batch = 2;
  EXPECT_FALSE(ValidateAttention(a).ok()) << "a batch needs a table row per item";
  a.block_table_stride = 1;
  EXPECT_TRUE(ValidateAttention(a).ok());
  const int32_t positions[2] = {5, 99};
  a.batch_positions = positions;
  EXPECT_TRUE(ValidateAttention(a).ok());
  a.device_position = &device_position;
  EXPECT_FALSE(ValidateAttention(a).ok()) << "batch_positions excludes device_position";
}

}  // namespace
}  // namespace strata::kernels
