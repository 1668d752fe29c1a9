// Mini-sequence prefill, incremental decode and sharded weights all give the one-shot results.
#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "common/status.h"
#include "tests/testing/golden.h"
#include "tests/testing/safetensors_writer.h"
#include "worker/engine/cpu_backend.h"
#include "worker/engine/engine.h"
#include "worker/model/model.h"

namespace strata::engine {
namespace {

constexpr double kSameResult = 1e-5;  // relative L2: only GEMM blocking may differ

struct Loaded {
  model::Model model;
  std::vector<int32_t> prompt;
};

Loaded Load(const std::string& name) {
  const auto dir = testing::TestDataDir() / "models" / name;
  auto golden = testing::LoadModelGolden(dir / "golden.json");
  auto model = model::OpenModel(dir);
  STRATA_CHECK(golden.ok() && model.ok());
  return Loaded{*std::move(model), golden->prompt_ids};
}

// Logits of every prompt position, computed with `mini_sequence_tokens`.
std::vector<float> AllLogits(const model::Model& model, absl::Span<const int32_t> prompt,
                             int64_t mini_sequence_tokens) {
  auto engine = Engine::Create(model, CreateCpuBackend(), {.mini_sequence_tokens = mini_sequence_tokens});
  EXPECT_TRUE(engine.ok()) << engine.status();
  auto sequence = (*engine)->NewSequence(static_cast<int64_t>(prompt.size()));
  EXPECT_TRUE(sequence.ok()) << sequence.status();
  std::vector<int64_t> rows(prompt.size());
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>(i);
  auto logits = (*engine)->Forward(*sequence, prompt, rows);
  EXPECT_TRUE(logits.ok()) << logits.status();
  return logits.ok() ? *std::move(logits) : std::vector<float>();
}

class MiniSequenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(MiniSequenceTest, EveryMiniSequenceLengthGivesTheOneShotLogits) {
  const Loaded loaded = Load(GetParam());
  const int64_t n = static_cast<int64_t>(loaded.prompt.size());
  const std::vector<float> one_shot = AllLogits(loaded.model, loaded.prompt, n);
  ASSERT_FALSE(one_shot.empty());
  for (int64_t length : {1, 7, 64}) {
    const std::vector<float> chunked = AllLogits(loaded.model, loaded.prompt, length);
    EXPECT_LT(testing::RelativeL2(chunked, one_shot), kSameResult) << "mini-sequence length " << length;
  }
}

TEST_P(MiniSequenceTest, PrefillInPiecesEqualsOnePrefill) {
  const Loaded loaded = Load(GetParam());
  const int64_t n = static_cast<int64_t>(loaded.prompt.size());
  const int64_t vocab = loaded.model.config.vocab_size;
  const std::vector<float> one_shot = AllLogits(loaded.model, loaded.prompt, n);

  // The same prompt as a prefill of 100 tokens, then single-token decode steps, then the rest at once.
  auto engine = Engine::Create(loaded.model, CreateCpuBackend(), {.mini_sequence_tokens = 16});
  ASSERT_TRUE(engine.ok()) << engine.status();
  auto sequence = (*engine)->NewSequence(n);
  ASSERT_TRUE(sequence.ok());
  const absl::Span<const int32_t> prompt(loaded.prompt);
  int64_t done = 0;
  auto run = [&](int64_t count) {
    std::vector<int64_t> rows(count);
    for (int64_t i = 0; i < count; ++i) rows[i] = i;
    auto logits = (*engine)->Forward(*sequence, prompt.subspan(done, count), rows);
    ASSERT_TRUE(logits.ok()) << logits.status();
    const absl::Span<const float> expected(one_shot.data() + done * vocab, count * vocab);
    EXPECT_LT(testing::RelativeL2(*logits, expected), kSameResult) << "tokens from " << done;
    done += count;
  };
  run(100);
  for (int i = 0; i < 5; ++i) run(1);
  run(n - done);
  EXPECT_EQ(sequence->length(), n);
}

TEST_P(MiniSequenceTest, ShardedCheckpointGivesTheSameFingerprintAndLogits) {
  const Loaded loaded = Load(GetParam());
  const auto sharded_dir = std::filesystem::path(::testing::TempDir()) / ("sharded-" + GetParam());
  std::filesystem::remove_all(sharded_dir);
  ASSERT_TRUE(testing::ShardCheckpoint(loaded.model.dir, sharded_dir, 3).ok());
  auto sharded = model::OpenModel(sharded_dir);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  EXPECT_EQ(sharded->checkpoint.files().size(), 3u);
  EXPECT_EQ(sharded->fingerprint, loaded.model.fingerprint);
  const int64_t n = static_cast<int64_t>(loaded.prompt.size());
  EXPECT_EQ(AllLogits(*sharded, loaded.prompt, n), AllLogits(loaded.model, loaded.prompt, n));
}

INSTANTIATE_TEST_SUITE_P(TinyModels, MiniSequenceTest, ::testing::Values("llama3-tiny", "qwen2-tiny", "mistral-tiny"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace strata::engine
