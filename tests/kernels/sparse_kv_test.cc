// The sparse-decode kernels (kernels/sparse_kv.h) against the CPU reference (worker/engine/chunk_selection.h):
// chunk bounds exactly, the chosen chunks (ascending, sinks kept, a planted chunk found, every choice
// among the reference's best within float rounding), and the gather from device and page-locked host
// memory exactly.
#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda_owners.h"
#include "kernels/sparse_kv.h"
#include "tests/kernels/device_test_util.h"
#include "worker/engine/chunk_selection.h"

namespace strata::kernels {
namespace {

using testing::DeviceArray;

class SparseKvTest : public ::testing::TestWithParam<DType> {};

TEST_P(SparseKvTest, BoundsSelectionAndGatherMatchTheReference) {
  STRATA_SKIP_WITHOUT_GPU();
  const DType dtype = GetParam();
  std::mt19937 rng(25);
  constexpr int64_t kKvHeads = 4, kHeads = 16, kHeadDim = 128, kChunk = 16, kChunks = 300;
  constexpr int64_t kCapacity = kChunk * kChunks, kCandidates = 280, kSelect = 40, kSinks = 2, kPlanted = 137;
  std::vector<float> keys = testing::RandomFloats(kKvHeads * kCapacity * kHeadDim, rng);
  std::vector<float> q = testing::RandomFloats(kHeads * kHeadDim, rng);
  // Head 1's chunk kPlanted holds a key along its first query head: it must be chosen.
  for (int64_t d = 0; d < kHeadDim; ++d) keys[((1 * kCapacity) + kPlanted * kChunk + 5) * kHeadDim + d] = 4 * q[(4 + 0) * kHeadDim + d];
  testing::RoundTo(dtype, keys);
  testing::RoundTo(dtype, q);
  DeviceArray d_keys(dtype, keys), d_q(dtype, q), d_bounds(dtype, kKvHeads * kChunks * 2 * kHeadDim);

  // Bounds in two calls, the second starting inside a chunk (widening it).
  std::vector<float> bounds(kKvHeads * kChunks * 2 * kHeadDim, 0.0f);
  for (auto [first, rows] : {std::pair<int64_t, int64_t>{0, 1000}, {1000, kCapacity - 1000}}) {
    ASSERT_TRUE(UpdateKeyBounds(dtype, d_keys.data(), kKvHeads, kCapacity, kHeadDim, first, rows, kChunk, kChunks,
                                d_bounds.data(), nullptr)
                    .ok());
    engine::UpdateKeyBoundsReference(keys.data(), kKvHeads, kCapacity, kHeadDim, first, rows, kChunk, kChunks,
                                     bounds.data());
  }
  ASSERT_EQ(d_bounds.Get(), bounds);

  const engine::AttentionParams params{.num_heads = kHeads, .num_kv_heads = kKvHeads, .head_dim = kHeadDim};
  const engine::SparseGather gather{.chunk_tokens = kChunk, .num_chunks = kChunks, .candidates = kCandidates,
                                    .select = kSelect, .sink_chunks = kSinks};
  auto scores = DeviceBuffer::Allocate(kKvHeads * kCandidates * sizeof(float));
  auto ids = DeviceBuffer::Allocate(kKvHeads * kSelect * sizeof(int32_t));
  ASSERT_TRUE(scores.ok() && ids.ok());
  const ChunkSelection selection{.num_heads = kHeads, .num_kv_heads = kKvHeads, .head_dim = kHeadDim,
                                 .num_chunks = kChunks, .candidates = kCandidates, .select = kSelect,
                                 .sink_chunks = kSinks};
  ASSERT_TRUE(SelectChunks(dtype, d_q.data(), d_bounds.data(), selection, static_cast<float*>(scores->data()),
                           static_cast<int32_t*>(ids->data()), nullptr)
                  .ok());
  std::vector<int32_t> chosen(kKvHeads * kSelect);
  ASSERT_EQ(cudaMemcpy(chosen.data(), ids->data(), chosen.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int64_t h = 0; h < kKvHeads; ++h) {
    const auto begin = chosen.begin() + h * kSelect, end = begin + kSelect;
    EXPECT_TRUE(std::is_sorted(begin, end)) << "head " << h;
    EXPECT_EQ(std::adjacent_find(begin, end), end) << "head " << h << " chose a chunk twice";
    for (int64_t s = 0; s < kSinks; ++s) EXPECT_EQ(begin[s], s) << "head " << h << " dropped a sink";
    // Every choice scores at least the reference's select-th best (less float rounding of the sums).
    std::vector<float> ref(kCandidates);
    for (int64_t c = 0; c < kCandidates; ++c) {
      ref[c] = engine::ChunkScoreReference(q.data(), bounds.data(), gather, params, h, c);
    }
    std::vector<float> sorted = ref;
    std::nth_element(sorted.begin(), sorted.begin() + kSelect - 1, sorted.end(), std::greater<float>());
    const float cutoff = sorted[kSelect - 1];
    for (auto it = begin; it != end; ++it) {
      ASSERT_GE(*it, 0);
      ASSERT_LT(*it, kCandidates);
      EXPECT_GE(ref[*it], cutoff - 1e-3f * std::abs(cutoff)) << "head " << h << " chunk " << *it;
    }
  }
  EXPECT_TRUE(std::binary_search(chosen.begin() + kSelect, chosen.begin() + 2 * kSelect, int32_t{kPlanted}));

  // Gather: K homes in page-locked host memory (read over the bus), V homes and tails on the device.
  const size_t element = DTypeSize(dtype);
  const size_t keys_bytes = keys.size() * element;
  auto host_keys = PinnedBuffer::Allocate(keys_bytes);
  ASSERT_TRUE(host_keys.ok());
  ASSERT_EQ(cudaMemcpy(host_keys->data(), d_keys.data(), keys_bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  std::vector<float> values = testing::RandomFloats(keys.size(), rng);
  testing::RoundTo(dtype, values);
  DeviceArray d_values(dtype, values);
  constexpr int64_t kTailRows = 37, kTailFirst = kCandidates * kChunk;
  constexpr int64_t kOutCapacity = kSelect * kChunk + kTailRows + 3;
  ChunkSources sources;
  for (int64_t h = 0; h < kKvHeads; ++h) {
    sources.k[h] = static_cast<const char*>(host_keys->data()) + h * kCapacity * kHeadDim * element;
    sources.v[h] = static_cast<const char*>(d_values.data()) + h * kCapacity * kHeadDim * element;
    sources.k_tail[h] = static_cast<const char*>(d_keys.data()) + (h * kCapacity + kTailFirst) * kHeadDim * element;
    sources.v_tail[h] = static_cast<const char*>(d_values.data()) + (h * kCapacity + kTailFirst) * kHeadDim * element;
  }
  DeviceArray k_out(dtype, kKvHeads * kOutCapacity * kHeadDim), v_out(dtype, kKvHeads * kOutCapacity * kHeadDim);
  ASSERT_TRUE(GatherChunks(dtype, sources, kKvHeads, kHeadDim, static_cast<const int32_t*>(ids->data()), kSelect,
                           kChunk, kTailRows, k_out.data(), v_out.data(), kOutCapacity, nullptr)
                  .ok());
  const std::vector<float> got_k = k_out.Get(), got_v = v_out.Get();
  for (int64_t h = 0; h < kKvHeads; ++h) {
    for (int64_t r = 0; r < kSelect * kChunk + kTailRows; ++r) {
      const int64_t token = r < kSelect * kChunk ? chosen[h * kSelect + r / kChunk] * kChunk + r % kChunk
                                                 : kTailFirst + (r - kSelect * kChunk);
      for (int64_t d = 0; d < kHeadDim; ++d) {
        ASSERT_EQ(got_k[(h * kOutCapacity + r) * kHeadDim + d], keys[(h * kCapacity + token) * kHeadDim + d]) << h;
        ASSERT_EQ(got_v[(h * kOutCapacity + r) * kHeadDim + d], values[(h * kCapacity + token) * kHeadDim + d]) << h;
      }
    }
  }
}

TEST_P(SparseKvTest, ChoosingEveryCandidateKeepsTheOrder) {
  STRATA_SKIP_WITHOUT_GPU();
  const DType dtype = GetParam();
  const ChunkSelection all{.num_heads = 2, .num_kv_heads = 2, .head_dim = 64, .num_chunks = 9, .candidates = 7,
                           .select = 7, .sink_chunks = 1};
  DeviceArray q(dtype, 2 * 64), bounds(dtype, 2 * 9 * 128);
  auto scores = DeviceBuffer::Allocate(2 * 7 * sizeof(float));
  auto ids = DeviceBuffer::Allocate(2 * 7 * sizeof(int32_t));
  ASSERT_TRUE(scores.ok() && ids.ok());
  // Poisoned (NaN) bounds do not matter when every candidate is kept.
  ASSERT_TRUE(SelectChunks(dtype, q.data(), bounds.data(), all, static_cast<float*>(scores->data()),
                           static_cast<int32_t*>(ids->data()), nullptr)
                  .ok());
  std::vector<int32_t> chosen(14);
  ASSERT_EQ(cudaMemcpy(chosen.data(), ids->data(), 14 * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(chosen, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6}));
  ChunkSelection bad = all;
  bad.select = 8;
  EXPECT_FALSE(SelectChunks(dtype, q.data(), bounds.data(), bad, nullptr, nullptr, nullptr).ok());
}

INSTANTIATE_TEST_SUITE_P(Kernels, SparseKvTest, ::testing::Values(DType::kF32, DType::kBF16),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

}  // namespace
}  // namespace strata::kernels
