#include "worker/engine/generate.h"

#include <algorithm>

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
