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
  EXPECT_THAT(ValidateSamplingOptions({.min_p = -0.1f}).message(), HasSubstr("min_p"));
  EXPECT_THAT(ValidateSamplingOptions({.min_p = 1.1f}).message(), HasSubstr("min_p"));
  EXPECT_THAT(ValidateSamplingOptions({.repetition_penalty = 0.0f}).message(), HasSubstr("repetition_penalty"));
  EXPECT_THAT(ValidateSamplingOptions({.repetition_penalty = std::nanf("")}).message(), HasSubstr("repetition_penalty"));
  EXPECT_THAT(ValidateSamplingOptions({.frequency_penalty = 2.5f}).message(), HasSubstr("frequency_penalty"));
  EXPECT_THAT(ValidateSamplingOptions({.presence_penalty = -2.5f}).message(), HasSubstr("presence_penalty"));
  EXPECT_TRUE(ValidateSamplingOptions(
                  {.min_p = 0.1f, .repetition_penalty = 1.3f, .frequency_penalty = -2.0f, .presence_penalty = 2.0f})
                  .ok());
}

// Hand-computed, greedy so that each step is exact. Penalty 2 over logits {2, 1.5, -0.5, 1.2}, prompt {0}:
// step 1 sees {1, 1.5, -0.5, 1.2} -> 1; step 2 (1 generated) {1, 0.75, -0.5, 1.2} -> 3; step 3
// {1, 0.75, -0.5, 0.6} -> 0. A token seen twice (prompt and output) is penalized once.
TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOfPromptAndOutput) {
  const std::vector<float> logits = {2.0f, 1.5f, -0.5f, 1.2f};
  const std::vector<int32_t> prompt = {0, 0};
  Sampler sampler({.repetition_penalty = 2.0f}, prompt);
  EXPECT_EQ(Draw(sampler, logits), 1);
  EXPECT_EQ(Draw(sampler, logits), 3);
  EXPECT_EQ(Draw(sampler, logits), 0);
  // Token 0 is in the prompt and now in the output: still 1 (2 / 2), not 0.5; token 2's -0.5 unseen.
  EXPECT_EQ(Draw(sampler, logits), 0);
  // A negative logit is multiplied: {-1, -1.5} with 0 in the prompt is {-2, -1.5} -> 1.
  const std::vector<float> negative = {-1.0f, -1.5f};
  Sampler negative_sampler({.repetition_penalty = 2.0f}, std::vector<int32_t>{0});
  EXPECT_EQ(Draw(negative_sampler, negative), 1);
  // Off (1), the prompt is not read: plain argmax.
  Sampler off({.repetition_penalty = 1.0f}, prompt);
  EXPECT_EQ(Draw(off, logits), 0);
}

// Logits {3, 2.5, 0}, frequency 0.4, presence 0.2, greedy. The prompt {0, 0} does not count. Token 0's
// logit after n of it: 3 - 0.4 n - 0.2 (n > 0); token 1's: 2.5 - 0.4 m - 0.2 (m > 0).
//   step 1: {3, 2.5}     -> 0     step 2: {2.4, 2.5} -> 1     step 3: {2.4, 1.9} -> 0
//   step 4: {2.0, 1.9}   -> 0     step 5: {1.6, 1.9} -> 1
TEST(Sampler, FrequencyAndPresencePenaltiesCountGeneratedTokensOnly) {
  const std::vector<float> logits = {3.0f, 2.5f, 0.0f};
  Sampler sampler({.frequency_penalty = 0.4f, .presence_penalty = 0.2f}, std::vector<int32_t>{0, 0});
  std::vector<int32_t> drawn;
  for (int i = 0; i < 5; ++i) drawn.push_back(Draw(sampler, logits));
  EXPECT_EQ(drawn, (std::vector<int32_t>{0, 1, 0, 0, 1}));
  // A negative presence penalty favours what was said: the frequency penalty alone would hand step 2 to
  // token 1 (0.85 < 0.9); with presence -0.2 token 0 stays ahead (1.05).
  const std::vector<float> close = {1.0f, 0.9f};
  Sampler favour({.frequency_penalty = 0.15f, .presence_penalty = -0.2f});
  EXPECT_EQ(Draw(favour, close), 0);  // {1, 0.9}
  EXPECT_EQ(Draw(favour, close), 0);  // {1.05, 0.9}
  Sampler frequency_only({.frequency_penalty = 0.15f});
  EXPECT_EQ(Draw(frequency_only, close), 0);
  EXPECT_EQ(Draw(frequency_only, close), 1);  // {0.85, 0.9}
}

// min_p 0.25 over probabilities {0.5, 0.3, 0.15, 0.05}: the floor is 0.125, so {0, 1, 2} stay, renormalized
// over 0.95, and token 3 never appears. min_p 0.7 (floor 0.35) keeps token 0 alone.
TEST(Sampler, MinPDropsTokensBelowItsShareOfTheMostLikelyAndRenormalizes) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  Sampler sampler({.temperature = 1.0f, .min_p = 0.25f, .seed = 4});
  std::vector<int> counts(4, 0);
  constexpr int kDraws = 20000;
  for (int i = 0; i < kDraws; ++i) ++counts[Draw(sampler, logits)];
  EXPECT_NEAR(counts[0] / double{kDraws}, 0.5 / 0.95, 0.015);
  EXPECT_NEAR(counts[1] / double{kDraws}, 0.3 / 0.95, 0.015);
  EXPECT_NEAR(counts[2] / double{kDraws}, 0.15 / 0.95, 0.015);
  EXPECT_EQ(counts[3], 0);
  Sampler strict({.temperature = 1.0f, .min_p = 0.7f, .seed = 4});
  for (int i = 0; i < 200; ++i) EXPECT_EQ(Draw(strict, logits), 0);
}

// The penalties apply before temperature: logits {1, 1}, token 0 in the prompt, repetition 2 gives
// {0.5, 1}; at temperature 0.5 that is {1, 2}, so P(1) = e^2 / (e + e^2) = 0.7311. One draw per seed, so
// that the history of one draw never shapes the next.
TEST(Sampler, PenaltiesApplyBeforeTemperature) {
  const std::vector<float> logits = {1.0f, 1.0f};
  const std::vector<int32_t> prompt = {0};
  constexpr int kDraws = 20000;
  int ones = 0;
  for (int seed = 0; seed < kDraws; ++seed) {
    Sampler sampler({.temperature = 0.5f, .repetition_penalty = 2.0f, .seed = static_cast<uint64_t>(seed)}, prompt);
    ones += Draw(sampler, logits);
  }
  EXPECT_NEAR(ones / double{kDraws}, std::exp(2.0) / (std::exp(1.0) + std::exp(2.0)), 0.015);
}

}  // namespace
}  // namespace strata::engine
