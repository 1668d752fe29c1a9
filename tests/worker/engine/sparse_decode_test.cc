// Importance-aware sparse decode (kv_cache.h, SparseDecode): with a budget that covers the context it
// reads every chunk in order and gives exactly the logits and greedy ids of exact decode; with a smaller
// budget it reads fewer keys over the bus and says its outputs are approximate. On the CPU backend (CI)
// and, where a GPU is present, on the CUDA backend in float32.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "common/status.h"
#include "gtest/gtest.h"
#include "tests/testing/golden.h"
#include "tests/testing/tiny_model_suite.h"
#include "worker/engine/chunk_selection.h"
#include "worker/engine/engine.h"
#include "worker/engine/kv_cache.h"

namespace strata::engine {
namespace {

class SparseDecodeTest : public testing::TinyModelSuite {
 protected:
  struct Run {
    std::vector<float> logits;  // of the last prompt row, then of every decode step
    std::vector<int32_t> ids;   // greedy ids fed back
    KvTransferStats prefill, end;
  };

  std::unique_ptr<Engine> MakeEngine() {
    auto engine = Engine::Create(*model_, MakeBackend());
    STRATA_CHECK(engine.ok());
    return *std::move(engine);
  }

  // Every head in pinned host memory but those of layer 0 (in HBM: the exact path beside the sparse one).
  KvPlacement Placement(const SparseDecode& sparse) const {
    const model::ModelConfig& c = model_->config;
    std::vector<KvTier> tiers(c.num_layers * c.num_kv_heads, KvTier::kHost);
    std::fill(tiers.begin(), tiers.begin() + c.num_kv_heads, KvTier::kDevice);
    KvPlacement placement;
    auto plan = ResidencyPlan::FromTiers(c.num_layers, c.num_kv_heads, std::move(tiers));
    STRATA_CHECK(plan.ok());
    placement.plan = *plan;
    placement.sparse = sparse;
    return placement;
  }

  Run Decode(Engine& engine, const KvPlacement& placement, int steps) {
    Run run;
    const int64_t n = static_cast<int64_t>(prompt_.size());
    auto sequence = engine.NewSequence(n + steps, placement);
    EXPECT_TRUE(sequence.ok()) << sequence.status();
    if (!sequence.ok()) return run;
    const int64_t last = n - 1, zero = 0;
    auto logits = engine.Forward(*sequence, prompt_, {&last, 1});
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return run;
    run.prefill = sequence->transfer_stats();
    for (int step = 0; step <= steps; ++step) {
      run.logits.insert(run.logits.end(), logits->begin(), logits->end());
      if (step == steps) break;
      const int32_t token = static_cast<int32_t>(std::max_element(logits->begin(), logits->end()) - logits->begin());
      run.ids.push_back(token);
      logits = engine.Forward(*sequence, {&token, 1}, {&zero, 1});
      EXPECT_TRUE(logits.ok()) << logits.status();
      if (!logits.ok()) return run;
    }
    run.end = sequence->transfer_stats();
    return run;
  }

  // Layers 1.. (offloaded by Placement) that attend over every key.
  int64_t FullAttentionLayersOffloaded() const {
    const auto& w = model_->config.layer_window;
    return std::count(w.begin() + 1, w.end(), int64_t{0});
  }

  bool Windowed() const {
    const auto& w = model_->config.layer_window;
    return std::any_of(w.begin(), w.end(), [](int64_t window) { return window > 0; });
  }
};

TEST_P(SparseDecodeTest, ABudgetCoveringTheContextReadsEveryChunkAndIsExact) {
  constexpr int kSteps = 6;
  auto engine = MakeEngine();
  const Run exact = Decode(*engine, Placement({}), kSteps);
  ASSERT_FALSE(exact.logits.empty());
  const int64_t context = static_cast<int64_t>(prompt_.size()) + kSteps;
  // Chunks of 4 and a window of 5: every step has whole chunks to choose from, and the budget takes all.
  const Run sparse = Decode(
      *engine, Placement({.budget_tokens = context, .chunk_tokens = 4, .sink_tokens = 4, .recent_tokens = 5}), kSteps);
  ASSERT_EQ(sparse.logits.size(), exact.logits.size());
  EXPECT_EQ(testing::RelativeL2(sparse.logits, exact.logits), 0.0);
  EXPECT_EQ(sparse.ids, exact.ids);
  EXPECT_EQ(sparse.end.approximate_attentions, 0);
  // Every offloaded layer without a sliding window, in every decode step, went through chunk selection.
  EXPECT_EQ(sparse.end.sparse_attentions, kSteps * FullAttentionLayersOffloaded());
}

TEST_P(SparseDecodeTest, ASmallBudgetReadsFewerKeysAndReportsApproximateAttention) {
  if (Windowed()) GTEST_SKIP() << "sliding-window layers stay exact";
  constexpr int kSteps = 4;
  const int64_t n = static_cast<int64_t>(prompt_.size());
  ASSERT_GE(n, 24) << "the golden prompt is too short to leave chunks out";
  auto engine = MakeEngine();
  const Run exact = Decode(*engine, Placement({}), kSteps);
  const SparseDecode sparse_options{.budget_tokens = 12, .chunk_tokens = 4, .sink_tokens = 4, .recent_tokens = 4};
  const Run sparse = Decode(*engine, Placement(sparse_options), kSteps);
  ASSERT_EQ(sparse.logits.size(), exact.logits.size());
  // The prompt's pass is exact either way.
  const int64_t vocab = model_->config.vocab_size;
  EXPECT_TRUE(std::equal(sparse.logits.begin(), sparse.logits.begin() + vocab, exact.logits.begin()));
  for (float x : sparse.logits) ASSERT_TRUE(std::isfinite(x));
  EXPECT_EQ(sparse.end.approximate_attentions, kSteps * (model_->config.num_layers - 1));
  // At most budget + one chunk of keys per offloaded head and step crossed the bus, not the whole context.
  const model::ModelConfig& c = model_->config;
  const int64_t key_bytes = 2 * (c.num_layers - 1) * c.num_kv_heads * c.head_dim * int64_t{sizeof(float)};
  const int64_t sparse_bytes = sparse.end.bytes_uploaded - sparse.prefill.bytes_uploaded;
  EXPECT_GT(sparse_bytes, 0);
  EXPECT_LE(sparse_bytes, kSteps * key_bytes * (sparse_options.budget_tokens + sparse_options.chunk_tokens));
  EXPECT_LT(sparse_options.budget_tokens + sparse_options.chunk_tokens, n / 2);
  EXPECT_GT(testing::RelativeL2(sparse.logits, exact.logits), 0.0) << "leaving keys out changed nothing";
}

// The budget of a live sequence can change (the benchmark compares budgets on one sequence): raised past
// what the sequence was created with, it reads every chunk and is exact again; 0 is exact decode.
TEST_P(SparseDecodeTest, ABudgetRaisedOnALiveSequenceCoversTheContext) {
  constexpr int kSteps = 3;
  auto engine = MakeEngine();
  const Run exact = Decode(*engine, Placement({}), kSteps);
  const int64_t n = static_cast<int64_t>(prompt_.size());
  auto sequence =
      engine->NewSequence(n + kSteps, Placement({.budget_tokens = 1, .chunk_tokens = 4, .sink_tokens = 4,
                                                 .recent_tokens = 5}));
  ASSERT_TRUE(sequence.ok()) << sequence.status();
  const int64_t last = n - 1, zero = 0;
  auto logits = engine->Forward(*sequence, prompt_, {&last, 1});
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_TRUE(sequence->SetSparseDecodeBudget(n + kSteps).ok());
  std::vector<float> all = *logits;
  for (int step = 0; step < kSteps; ++step) {
    const int32_t token = exact.ids[step];
    logits = engine->Forward(*sequence, {&token, 1}, {&zero, 1});
    ASSERT_TRUE(logits.ok()) << logits.status();
    all.insert(all.end(), logits->begin(), logits->end());
  }
  EXPECT_EQ(testing::RelativeL2(all, exact.logits), 0.0);
  EXPECT_EQ(sequence->transfer_stats().approximate_attentions, 0);
  EXPECT_FALSE(sequence->SetSparseDecodeBudget(-1).ok());
}

TEST_P(SparseDecodeTest, InvalidOptionsAreRefused) {
  auto engine = MakeEngine();
  for (const SparseDecode& bad : {SparseDecode{.budget_tokens = 8, .chunk_tokens = 0},
                                  SparseDecode{.budget_tokens = -1}, SparseDecode{.budget_tokens = 8, .recent_tokens = 0}}) {
    auto sequence = engine->NewSequence(64, Placement(bad));
    ASSERT_FALSE(sequence.ok());
    EXPECT_EQ(sequence.status().code(), absl::StatusCode::kInvalidArgument) << sequence.status();
  }
}

INSTANTIATE_TEST_SUITE_P(TinyModels, SparseDecodeTest, testing::BackendsAndTinyModels(), testing::SuiteParamName);

// The reference chooser keeps sinks, the highest bounds and ascending order, ties to the lower chunk.
TEST(ChunkSelectionReference, KeepsSinksAndTheHighestBoundsInAscendingOrder) {
  constexpr int64_t kHeadDim = 2, kChunks = 6;
  const AttentionParams params{.num_heads = 2, .num_kv_heads = 1, .head_dim = kHeadDim};
  // Keys of one head, 6 chunks of 2 tokens; chunk 4 holds the key closest to the query, chunk 2 and 5 tie.
  std::vector<float> keys = {0, 0, 0, 0,  1, 0, 1, 0,  2, 0, 2, 0,  -1, 0, -1, 0,  5, 0, 5, 1,  2, 0, 2, 0};
  std::vector<float> bounds(kChunks * 2 * kHeadDim, 0.0f);
  UpdateKeyBoundsReference(keys.data(), 1, 12, kHeadDim, 0, 12, 2, kChunks, bounds.data());
  EXPECT_EQ(bounds[4 * 4 + 0], 5.0f);  // chunk 4: min (5, 0), max (5, 1)
  EXPECT_EQ(bounds[4 * 4 + 3], 1.0f);
  const std::vector<float> q = {1, 0, 0.5f, 0};  // two query heads of the one KV head
  const SparseGather gather{.chunk_tokens = 2, .num_chunks = kChunks, .candidates = kChunks, .select = 3,
                            .sink_chunks = 1};
  EXPECT_EQ(SelectChunksReference(q.data(), bounds.data(), gather, params), (std::vector<int32_t>{0, 2, 4}));
  // Widening: a later row in chunk 3 raises its maximum.
  keys[7 * 2] = 9;
  UpdateKeyBoundsReference(keys.data(), 1, 12, kHeadDim, 7, 1, 2, kChunks, bounds.data());
  EXPECT_EQ(bounds[3 * 4 + 0], -1.0f);
  EXPECT_EQ(bounds[3 * 4 + 2], 9.0f);
  EXPECT_EQ(SelectChunksReference(q.data(), bounds.data(), gather, params), (std::vector<int32_t>{0, 3, 4}));
}

}  // namespace
}  // namespace strata::engine
