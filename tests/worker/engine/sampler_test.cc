#include "worker/engine/sampler.h"

#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strata::engine {
namespace {

using ::testing::HasSubstr;

int32_t Draw(Sampler& sampler, absl::Span<const float> logits) {
  absl::StatusOr<int32_t> token = sampler.Sample(logits);
  EXPECT_TRUE(token.ok()) << token.status();
  return token.value_or(-1);
}

TEST(Sampler, GreedyPicksTheLargestLogitAndTheLowestIdOnTies) {
  Sampler sampler({.temperature = 0.0f});
  EXPECT_EQ(Draw(sampler, std::vector<float>{0.1f, 3.0f, -2.0f, 2.9f}), 1);
  EXPECT_EQ(Draw(sampler, std::vector<float>{1.0f, 5.0f, 5.0f}), 1);
}

TEST(Sampler, TopKOfOneIsGreedy) {
  Sampler sampler({.temperature = 1.5f, .top_k = 1, .seed = 7});
  const std::vector<float> logits = {0.5f, 0.2f, 0.9f, 0.8f};
  for (int i = 0; i < 50; ++i) EXPECT_EQ(Draw(sampler, logits), 2);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferentTokens) {
  const std::vector<float> logits(64, 0.0f);  // uniform: every draw is pure randomness
  auto draw = [&](uint64_t seed) {
    Sampler sampler({.temperature = 1.0f, .seed = seed});
    std::vector<int32_t> out;
    for (int i = 0; i < 32; ++i) out.push_back(Draw(sampler, logits));
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(Sampler, FrequenciesFollowTheSoftmax) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  Sampler sampler({.temperature = 1.0f, .seed = 1});
  std::vector<int> counts(3, 0);
  constexpr int kDraws = 20000;
  for (int i = 0; i < kDraws; ++i) ++counts[Draw(sampler, logits)];
  // Standard deviation of a frequency is at most 0.0036 here; 0.015 is > 4 sigma.
  EXPECT_NEAR(counts[0] / double{kDraws}, 0.5, 0.015);
  EXPECT_NEAR(counts[1] / double{kDraws}, 0.3, 0.015);
  EXPECT_NEAR(counts[2] / double{kDraws}, 0.2, 0.015);
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  // Probabilities 0.5, 0.3, 0.2: top_p 0.7 keeps {0, 1}; token 2 must never appear.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  Sampler sampler({.temperature = 1.0f, .top_p = 0.7f, .seed = 3});
  std::vector<int> counts(3, 0);
  for (int i = 0; i < 5000; ++i) ++counts[Draw(sampler, logits)];
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_EQ(counts[2], 0);
}

TEST(Sampler, LowTemperatureConcentratesOnTheMaximum) {
  const std::vector<float> logits = {1.0f, 1.5f, 0.0f};
  Sampler sampler({.temperature = 0.01f, .seed = 5});
  for (int i = 0; i < 100; ++i) EXPECT_EQ(Draw(sampler, logits), 1);
}

TEST(Sampler, TopKKeepsTokensTiedWithTheKth) {
  // top_k 2 over {3, 1, 1, 1, -5}: the three tied at 1 all stay, as in transformers; -5 never appears.
  const std::vector<float> logits = {3.0f, 1.0f, 1.0f, 1.0f, -5.0f};
  Sampler sampler({.temperature = 1.0f, .top_k = 2, .seed = 9});
  std::vector<int> counts(5, 0);
  for (int i = 0; i < 20000; ++i) ++counts[Draw(sampler, logits)];
  for (int id : {1, 2, 3}) EXPECT_GT(counts[id], 0) << id;
  EXPECT_EQ(counts[4], 0);
}

TEST(Sampler, TopKRenormalizesOverTheKeptTokens) {
  const std::vector<float> logits = {std::log(0.4f), std::log(0.4f), std::log(0.2f)};
  Sampler sampler({.temperature = 1.0f, .top_k = 2, .seed = 2});
  std::vector<int> counts(3, 0);
  constexpr int kDraws = 20000;
  for (int i = 0; i < kDraws; ++i) ++counts[Draw(sampler, logits)];
  EXPECT_NEAR(counts[0] / double{kDraws}, 0.5, 0.015);
  EXPECT_NEAR(counts[1] / double{kDraws}, 0.5, 0.015);
  EXPECT_EQ(counts[2], 0);
}

TEST(Sampler, RejectsNaNLogitsInEveryMode) {
  const std::vector<float> logits = {1.0f, std::nanf(""), 0.5f};
  for (float temperature : {0.0f, 1.0f}) {
    Sampler sampler({.temperature = temperature});
    auto token = sampler.Sample(logits);
    EXPECT_THAT(token.status().message(), HasSubstr("the logit of token 1 is NaN")) << temperature;
  }
}

TEST(Sampler, RejectsOutOfRangeOptions) {
  EXPECT_THAT(ValidateSamplingOptions({.temperature = -1.0f}).message(), HasSubstr("temperature"));
  EXPECT_THAT(ValidateSamplingOptions({.top_k = -2}).message(), HasSubstr("top_k"));
  EXPECT_THAT(ValidateSamplingOptions({.top_p = 0.0f}).message(), HasSubstr("top_p"));
  EXPECT_THAT(ValidateSamplingOptions({.top_p = 1.5f}).message(), HasSubstr("top_p"));
  EXPECT_TRUE(ValidateSamplingOptions({.temperature = 0.7f, .top_k = 40, .top_p = 0.9f}).ok());
}

}  // namespace
}  // namespace strata::engine
