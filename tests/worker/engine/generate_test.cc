#include "worker/engine/generate.h"

#include <algorithm>
#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/golden.h"
#include "worker/engine/cpu_backend.h"

namespace strata::engine {
namespace {

using ::testing::HasSubstr;

class GenerateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tiny = testing::LoadTinyModel("llama3-tiny");
    ASSERT_TRUE(tiny.ok()) << tiny.status();
    golden_ = std::move(tiny->golden);
    auto engine = Engine::Create(tiny->model, CreateCpuBackend());
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }

  testing::ModelGolden golden_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(GenerateTest, StopsAfterEmittingAStopTokenAndStreamsEveryToken) {
  const std::vector<int32_t>& greedy = golden_.cpu.greedy_ids;
  const int32_t stop = greedy[5];
  const auto first = std::find(greedy.begin(), greedy.end(), stop) - greedy.begin();
  std::vector<int32_t> streamed;
  auto result = Generate(*engine_, golden_.prompt_ids, {.max_new_tokens = 24, .stop_token_ids = {stop}},
                         [&](int32_t token) { streamed.push_back(token); });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->finish_reason, FinishReason::kStopToken);
  EXPECT_EQ(result->output_ids, std::vector<int32_t>(greedy.begin(), greedy.begin() + first + 1));
  EXPECT_EQ(streamed, result->output_ids);
}

// Each token's logprob is the engine's own log-softmax of its F32 CPU logits (computed here through the
// engine the same way: the prompt's rows in one pass, then token by token), whatever the sampler did to
// them (raw logprobs, as vLLM's default).
TEST_F(GenerateTest, ReportsTheLogSoftmaxOfTheRawLogitsForTheOutputAndThePrompt) {
  const std::vector<int32_t>& prompt = golden_.prompt_ids;
  const GenerateOptions options{.max_new_tokens = 6,
                                .sampling = {.temperature = 0.8f, .top_k = 5, .repetition_penalty = 1.3f, .seed = 2},
                                .top_logprobs = 3,
                                .prompt_logprobs = true};
  std::vector<PositionLogprobs> streamed;
  size_t prompt_seen = 0;
  auto result = Generate(
      *engine_, prompt, options, nullptr, [&](const PositionLogprobs& p) { streamed.push_back(p); },
      [&](absl::Span<const PositionLogprobs> p) { prompt_seen = p.size(); });
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->logprobs.size(), result->output_ids.size());
  ASSERT_EQ(result->prompt_logprobs.size(), prompt.size() - 1);
  EXPECT_EQ(prompt_seen, prompt.size() - 1);
  EXPECT_EQ(streamed.size(), result->logprobs.size());

  const int64_t vocab = engine_->config().vocab_size;
  auto sequence = engine_->NewSequence(static_cast<int64_t>(prompt.size() + result->output_ids.size()));
  ASSERT_TRUE(sequence.ok());
  std::vector<int64_t> rows(prompt.size());
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>(i);
  auto logits = engine_->Forward(*sequence, prompt, rows);
  ASSERT_TRUE(logits.ok());
  std::vector<float> all = *logits;
  const int64_t first = 0;
  for (size_t j = 0; j + 1 < result->output_ids.size(); ++j) {
    auto next = engine_->Forward(*sequence, {&result->output_ids[j], 1}, {&first, 1});
    ASSERT_TRUE(next.ok());
    all.insert(all.end(), next->begin(), next->end());
  }
  std::vector<int32_t> ids = prompt;
  ids.insert(ids.end(), result->output_ids.begin(), result->output_ids.end());
  for (size_t k = 1; k < ids.size(); ++k) {
    const float* row = all.data() + (k - 1) * vocab;
    const double max = *std::max_element(row, row + vocab);
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(row[i] - max);
    const double log_normalizer = max + std::log(sum);
    const PositionLogprobs& got =
        k < prompt.size() ? result->prompt_logprobs[k - 1] : result->logprobs[k - prompt.size()];
    EXPECT_NEAR(got.logprob, row[ids[k]] - log_normalizer, 1e-5) << "position " << k;
    ASSERT_EQ(got.top.size(), 3u);
    const int32_t best = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
    EXPECT_EQ(got.top[0].token, best) << k;
    EXPECT_NEAR(got.top[0].logprob, row[best] - log_normalizer, 1e-5) << k;
  }
}

TEST_F(GenerateTest, SeededSamplingRepeatsAndDiffersFromGreedy) {
  const GenerateOptions options{.max_new_tokens = 24, .sampling = {.temperature = 1.0f, .seed = 5}};
  auto a = Generate(*engine_, golden_.prompt_ids, options);
  auto b = Generate(*engine_, golden_.prompt_ids, options);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->output_ids, b->output_ids);
  EXPECT_NE(a->output_ids, golden_.cpu.greedy_ids);
}

TEST_F(GenerateTest, ZeroNewTokensGeneratesNothing) {
  auto result = Generate(*engine_, golden_.prompt_ids, {.max_new_tokens = 0});
  ASSERT_TRUE(result.ok());
  EXPECT_TRUE(result->output_ids.empty());
}

TEST_F(GenerateTest, RejectsBadRequestsWithoutRunningThem) {
  EXPECT_THAT(Generate(*engine_, {}, {}).status().message(), HasSubstr("the prompt has no tokens"));
  EXPECT_THAT(Generate(*engine_, golden_.prompt_ids, {.max_new_tokens = -1}).status().message(),
              HasSubstr("max_new_tokens must be >= 0"));
  EXPECT_THAT(Generate(*engine_, golden_.prompt_ids, {.sampling = {.top_p = 2.0f}}).status().message(),
              HasSubstr("top_p"));
  const std::vector<int32_t> too_long(8192, 5);
  EXPECT_THAT(Generate(*engine_, too_long, {}).status().message(),
              HasSubstr("the prompt has 8192 tokens; the model's context is 8192"));
}

}  // namespace
}  // namespace strata::engine
