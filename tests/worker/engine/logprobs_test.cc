#include "worker/engine/logprobs.h"

#include <cmath>
#include <limits>
#include <random>

#include "gtest/gtest.h"

namespace strata::engine {
namespace {

TEST(Logprobs, AreTheLogSoftmaxOfTheRawLogits) {
  std::mt19937 random(3);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  std::vector<float> logits(1000);
  for (float& x : logits) x = normal(random);
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x));
  for (int32_t token : {0, 17, 999}) {
    const PositionLogprobs p = LogprobsOf(logits, token, 5);
    EXPECT_NEAR(p.logprob, logits[token] - std::log(sum), 1e-5);
    ASSERT_EQ(p.top.size(), 5u);
    for (size_t i = 1; i < p.top.size(); ++i) EXPECT_GE(p.top[i - 1].logprob, p.top[i].logprob);
    const int32_t best = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    EXPECT_EQ(p.top[0].token, best);
    EXPECT_NEAR(p.top[0].logprob, logits[best] - std::log(sum), 1e-5);
  }
}

TEST(Logprobs, TiesGoToTheLowerIdAndTopIsBoundedByTheVocabulary) {
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, -std::numeric_limits<float>::infinity()};
  const PositionLogprobs p = LogprobsOf(logits, 3, 20);
  ASSERT_EQ(p.top.size(), 4u);
  EXPECT_EQ(p.top[0].token, 1);
  EXPECT_EQ(p.top[1].token, 2);
  EXPECT_EQ(p.top[2].token, 0);
  EXPECT_TRUE(std::isinf(p.logprob) && p.logprob < 0);
  EXPECT_TRUE(LogprobsOf(logits, 0, 0).top.empty());
}

}  // namespace
}  // namespace strata::engine
