// FetchPolicy: the prefill and fetch models it fits from its own observations, and the decision.
#include "worker/prefix/fetch_policy.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace strata::worker {
namespace {

constexpr double kLinear = 1e-4;     // s per token
constexpr double kQuadratic = 2e-8;  // s per token per earlier token
constexpr uint64_t kBlockBytes = 1 << 20;

double PrefillSeconds(int64_t cached, int64_t tokens) {
  return kLinear * FetchPolicy::Linear(cached, tokens) + kQuadratic * FetchPolicy::Quadratic(cached, tokens);
}

// Chunked prefills of 512 tokens at growing positions.
void ObservePrefills(FetchPolicy& policy) {
  for (int64_t cached = 0; cached < 8192; cached += 512) {
    policy.ObservePrefill(FetchPolicy::Linear(cached, 512), FetchPolicy::Quadratic(cached, 512),
                          PrefillSeconds(cached, 512));
  }
}

TEST(FetchPolicy, FitsThePrefillModelWithItsQuadraticTerm) {
  FetchPolicy policy({.prefill_s_per_token = 1.0});  // a prior far off: the fit must replace it
  ObservePrefills(policy);
  for (int64_t cached : {0, 4096, 30000}) {
    const double expected = PrefillSeconds(cached, 2048);
    EXPECT_NEAR(policy.Judge(cached, 2048, 0).compute_s, expected, 1e-3 * expected) << "after " << cached;
  }
}

TEST(FetchPolicy, FetchesFirstToMeasureThenAsTheMeasuredBandwidthSays) {
  FetchPolicy policy({.prefill_s_per_token = kLinear});
  ObservePrefills(policy);
  // 16 blocks of 1 MiB for 2,048 tokens at the start: computing costs ~0.25 s.
  const int64_t tokens = 2048;
  const uint64_t bytes = 16 * kBlockBytes;
  // Nothing measured yet: fetch, to measure.
  EXPECT_TRUE(policy.ShouldFetch(0, tokens, bytes));
  // A slow link: 1 ms + 10 MB/s (1.7 s for those bytes).
  for (uint64_t blocks : {1, 4, 8, 16, 2}) {
    policy.ObserveFetch(blocks * kBlockBytes, 1e-3 + static_cast<double>(blocks * kBlockBytes) / 10e6);
  }
  const FetchPolicy::Estimate slow = policy.Judge(0, tokens, bytes);
  EXPECT_NEAR(slow.fetch_s, 1e-3 + bytes / 10e6, 1e-3);
  EXPECT_FALSE(slow.fetch());
  // Advised against, but one in kExploreEvery goes anyway (the link may have become faster).
  int fetched = 0;
  for (int i = 0; i < 2 * FetchPolicy::kExploreEvery; ++i) fetched += policy.ShouldFetch(0, tokens, bytes) ? 1 : 0;
  EXPECT_EQ(fetched, 2);
  // Long after a prefix of 60k tokens, the same blocks cost more to compute (the quadratic term): worth it.
  EXPECT_TRUE(policy.Judge(60000, tokens, bytes).fetch());
  // The link gets fast (2 GB/s): the recent fetches outweigh the old ones.
  for (int i = 0; i < 40; ++i) {
    const uint64_t blocks = 1 + i % 16;
    policy.ObserveFetch(blocks * kBlockBytes, 1e-3 + static_cast<double>(blocks * kBlockBytes) / 2e9);
  }
  EXPECT_TRUE(policy.ShouldFetch(0, tokens, bytes));
}

TEST(FetchPolicy, FetchesOfOneSizeGiveTheirMeanRate) {
  FetchPolicy policy({.prefill_s_per_token = kLinear, .fetch_bytes_per_s = 1e12});
  for (int i = 0; i < 8; ++i) policy.ObserveFetch(16 * kBlockBytes, 16 * kBlockBytes / 100e6);  // 100 MB/s
  EXPECT_NEAR(policy.Judge(0, 2048, 16 * kBlockBytes).fetch_s, 16 * kBlockBytes / 100e6, 1e-6);
}

TEST(ForgetfulFit, OneShapeOfObservationsLeavesTheTwoTermsUndetermined) {
  ForgetfulFit fit(0.97);
  for (int i = 0; i < 10; ++i) fit.Observe(1.0, 2.0, 3.0);
  EXPECT_FALSE(fit.Coefficients().has_value());
  EXPECT_NEAR(fit.SlopeOfSecond(), 1.5, 1e-12);
}

}  // namespace
}  // namespace strata::worker
