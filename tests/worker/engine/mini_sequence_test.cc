// Mini-sequence prefill, incremental decode and sharded weights all give the one-shot results.
#include <filesystem>
#include <optional>
#include <string>

#include "common/status.h"
#include "gtest/gtest.h"
#include "tests/testing/golden.h"
#include "tests/testing/safetensors_writer.h"
#include "worker/engine/cpu_backend.h"
#include "worker/engine/engine.h"
#include "model/model.h"

namespace strata::engine {
namespace {

constexpr double kSameResult = 1e-5;  // relative L2: only GEMM blocking may differ

// Logits of every prompt position, computed with `mini_sequence_tokens`.
absl::StatusOr<std::vector<float>> AllLogits(const model::Model& model, absl::Span<const int32_t> prompt,
                                             int64_t mini_sequence_tokens) {
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                          Engine::Create(model, CreateCpuBackend(), {.mini_sequence_tokens = mini_sequence_tokens}));
  STRATA_ASSIGN_OR_RETURN(Sequence sequence, engine->NewSequence(static_cast<int64_t>(prompt.size())));
  std::vector<int64_t> rows(prompt.size());
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>(i);
  return engine->Forward(sequence, prompt, rows);
}

class MiniSequenceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto tiny = testing::LoadTinyModel(GetParam());
    ASSERT_TRUE(tiny.ok()) << tiny.status();
    prompt_ = tiny->golden.prompt_ids;
    model_.emplace(std::move(tiny->model));
    auto one_shot = AllLogits(*model_, prompt_, static_cast<int64_t>(prompt_.size()));
    ASSERT_TRUE(one_shot.ok()) << one_shot.status();
    one_shot_ = *std::move(one_shot);
  }

  std::optional<model::Model> model_;
  std::vector<int32_t> prompt_;
  std::vector<float> one_shot_;
};

TEST_P(MiniSequenceTest, EveryMiniSequenceLengthGivesTheOneShotLogits) {
  for (int64_t length : {1, 7, 64}) {
    auto chunked = AllLogits(*model_, prompt_, length);
    ASSERT_TRUE(chunked.ok()) << chunked.status();
    EXPECT_LT(testing::RelativeL2(*chunked, one_shot_), kSameResult) << "mini-sequence length " << length;
  }
}

TEST_P(MiniSequenceTest, PrefillInPiecesEqualsOnePrefill) {
  const int64_t n = static_cast<int64_t>(prompt_.size());
  const int64_t vocab = model_->config.vocab_size;
  // The same prompt as a prefill of 100 tokens, then single-token decode steps, then the rest at once.
  auto engine = Engine::Create(*model_, CreateCpuBackend(), {.mini_sequence_tokens = 16});
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto sequence = (*engine)->NewSequence(n);
  ASSERT_TRUE(sequence.ok()) << sequence.status();
  const absl::Span<const int32_t> prompt(prompt_);
  int64_t done = 0;
  auto run = [&](int64_t count) {
    std::vector<int64_t> rows(count);
    for (int64_t i = 0; i < count; ++i) rows[i] = i;
    auto logits = (*engine)->Forward(*sequence, prompt.subspan(done, count), rows);
    ASSERT_TRUE(logits.ok()) << logits.status();
    const absl::Span<const float> expected(one_shot_.data() + done * vocab, count * vocab);
    EXPECT_LT(testing::RelativeL2(*logits, expected), kSameResult) << "tokens from " << done;
    done += count;
  };
  run(100);
  for (int i = 0; i < 5; ++i) run(1);
  run(n - done);
  EXPECT_EQ(sequence->length(), n);
}

TEST_P(MiniSequenceTest, AFailedForwardLeavesTheSequenceUnchanged) {
  auto engine = Engine::Create(*model_, CreateCpuBackend());
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto sequence = (*engine)->NewSequence(static_cast<int64_t>(prompt_.size()));
  ASSERT_TRUE(sequence.ok());
  const int64_t row = 0;
  ASSERT_TRUE((*engine)->Forward(*sequence, absl::MakeConstSpan(prompt_).first(10), {}).ok());
  const std::vector<int32_t> bad = {3, 4, 100000};
  EXPECT_EQ((*engine)->Forward(*sequence, bad, {&row, 1}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sequence->length(), 10);
  // The rest of the prompt still gives the one-shot logits.
  const int64_t last = static_cast<int64_t>(prompt_.size()) - 11;
  auto logits = (*engine)->Forward(*sequence, absl::MakeConstSpan(prompt_).subspan(10), {&last, 1});
  ASSERT_TRUE(logits.ok()) << logits.status();
  const int64_t vocab = model_->config.vocab_size;
  EXPECT_LT(testing::RelativeL2(*logits, absl::MakeConstSpan(one_shot_).last(vocab)), kSameResult);
}

TEST_P(MiniSequenceTest, ShardedCheckpointGivesTheSameFingerprintAndLogits) {
  auto scratch = testing::ScratchDir::Create(::testing::TempDir(), "sharded");
  ASSERT_TRUE(scratch.ok()) << scratch.status();
  const auto sharded_dir = scratch->path() / GetParam();
  ASSERT_TRUE(testing::ShardCheckpoint(model_->dir, sharded_dir, 3).ok());
  auto sharded = model::OpenModel(sharded_dir);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  EXPECT_EQ(sharded->checkpoint.files().size(), 3u);
  EXPECT_EQ(sharded->fingerprint, model_->fingerprint);
  auto logits = AllLogits(*sharded, prompt_, static_cast<int64_t>(prompt_.size()));
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_EQ(*logits, one_shot_);
}

INSTANTIATE_TEST_SUITE_P(TinyModels, MiniSequenceTest,
                         ::testing::Values("llama3-tiny", "qwen2-tiny", "mistral-tiny", "mistral-window-tiny"),
                         [](const auto& info) { return testing::TestNameOf(info.param); });

}  // namespace
}  // namespace strata::engine
