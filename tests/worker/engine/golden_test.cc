// The CPU engine against Hugging Face transformers' float32 outputs for the three tiny checkpoints.
#include "tests/testing/golden.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/engine/cpu_backend.h"
#include "worker/engine/engine.h"
#include "worker/engine/generate.h"
#include "model/model.h"

namespace strata::engine {
namespace {

constexpr double kLogitTolerance = 1e-4;  // relative L2, float32 vs float32

class GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto tiny = testing::LoadTinyModel(GetParam());
    ASSERT_TRUE(tiny.ok()) << tiny.status();
    golden_ = std::move(tiny->golden);
    auto engine = Engine::Create(tiny->model, CreateCpuBackend());
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }

  testing::ModelGolden golden_;
  std::unique_ptr<Engine> engine_;
};

TEST_P(GoldenTest, LastLogitsMatchTransformers) {
  const auto& prompt = golden_.prompt_ids;
  const int64_t n = static_cast<int64_t>(prompt.size());
  auto sequence = engine_->NewSequence(n);
  ASSERT_TRUE(sequence.ok()) << sequence.status();
  const std::vector<int64_t> rows = {n - 4, n - 3, n - 2, n - 1};
  auto logits = engine_->Forward(*sequence, prompt, rows);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const int64_t vocab = engine_->config().vocab_size;
  ASSERT_EQ(golden_.cpu.last_logits.size(), rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const absl::Span<const float> row(logits->data() + i * vocab, vocab);
    EXPECT_LT(testing::RelativeL2(row, golden_.cpu.last_logits[i]), kLogitTolerance) << "row " << rows[i];
  }
}

TEST_P(GoldenTest, LogitsAtPositionsMatchTransformers) {
  const auto& prompt = golden_.prompt_ids;
  auto sequence = engine_->NewSequence(static_cast<int64_t>(prompt.size()));
  ASSERT_TRUE(sequence.ok()) << sequence.status();
  std::vector<int64_t> rows;
  for (const auto& [position, logits] : golden_.cpu.logits_at) rows.push_back(position);
  auto logits = engine_->Forward(*sequence, prompt, rows);
  ASSERT_TRUE(logits.ok()) << logits.status();
  const int64_t vocab = engine_->config().vocab_size;
  for (size_t i = 0; i < rows.size(); ++i) {
    const absl::Span<const float> row(logits->data() + i * vocab, vocab);
    EXPECT_LT(testing::RelativeL2(row, golden_.cpu.logits_at.at(rows[i])), kLogitTolerance) << "position " << rows[i];
  }
}

TEST_P(GoldenTest, GreedyDecodingMatchesTransformers) {
  GenerateOptions options;
  options.max_new_tokens = static_cast<int64_t>(golden_.cpu.greedy_ids.size());
  auto result = Generate(*engine_, golden_.prompt_ids, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->output_ids, golden_.cpu.greedy_ids);
  EXPECT_EQ(result->finish_reason, FinishReason::kLength);
}

// The shared fixtures, plus two made by tests/data/tools/make_tiny_golden.py: a sliding window (64) shorter
// than the prompt, and Llama with o_proj and MLP biases.
INSTANTIATE_TEST_SUITE_P(TinyModels, GoldenTest,
                         ::testing::Values("llama3-tiny", "qwen2-tiny", "mistral-tiny", "mistral-window-tiny",
                                           "llama-bias-tiny"),
                         [](const auto& info) { return testing::TestNameOf(info.param); });

}  // namespace
}  // namespace strata::engine
