#include "common/metrics.h"

#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strata {
namespace {

using ::testing::HasSubstr;

TEST(Metrics, RendersCountersAndGaugesInTheTextFormat) {
  MetricsRegistry registry;
  Counter& hits = registry.AddCounter("strata_hits_total", "Block hits.", {{"tier", "dram"}});
  registry.AddCounter("strata_hits_total", "Block hits.", {{"tier", "ssd"}}).Increment(2);
  hits.Increment();
  registry.AddGauge("strata_bytes", "Bytes held.").Set(1.5e9);
  registry.AddGaugeCallback("strata_queue", "Queued.", {{"note", "a \"b\"\n"}}, [] { return 7.0; });
  const std::string text = registry.RenderText();
  EXPECT_THAT(text, HasSubstr("# HELP strata_hits_total Block hits.\n# TYPE strata_hits_total counter\n"
                              "strata_hits_total{tier=\"dram\"} 1\nstrata_hits_total{tier=\"ssd\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("strata_bytes 1.5e+09\n"));
  EXPECT_THAT(text, HasSubstr("strata_queue{note=\"a \\\"b\\\"\\n\"} 7\n"));
}

TEST(Metrics, HistogramBucketsAreCumulativeAndInfEqualsCount) {
  MetricsRegistry registry;
  Histogram& latency = registry.AddHistogram("strata_op_seconds", "Latency.", {0.1, 1}, {{"op", "get"}});
  for (double v : {0.05, 0.1, 0.5, 3.0}) latency.Observe(v);
  const std::string text = registry.RenderText();
  EXPECT_THAT(text, HasSubstr("strata_op_seconds_bucket{op=\"get\",le=\"0.1\"} 2\n"
                              "strata_op_seconds_bucket{op=\"get\",le=\"1\"} 3\n"
                              "strata_op_seconds_bucket{op=\"get\",le=\"+Inf\"} 4\n"
                              "strata_op_seconds_sum{op=\"get\"} 3.65\n"
                              "strata_op_seconds_count{op=\"get\"} 4\n"));
}

TEST(Metrics, ConcurrentIncrementsAreNotLost) {
  MetricsRegistry registry;
  Counter& counter = registry.AddCounter("strata_ops_total", "Ops.");
  Histogram& histogram = registry.AddHistogram("strata_op_seconds", "Latency.", LatencyBucketsSeconds());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        counter.Increment();
        histogram.Observe(1e-3);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter.Value(), 40000);
  EXPECT_EQ(histogram.Count(), 40000u);
}

TEST(Metrics, RemovedSeriesLeaveTheTextAndMayBeAddedAgain) {
  MetricsRegistry registry;
  registry.AddGaugeCallback("strata_seen_seconds", "S.", {{"holder", "a"}}, [] { return 1.0; });
  registry.AddGaugeCallback("strata_seen_seconds", "S.", {{"holder", "b"}}, [] { return 2.0; });
  EXPECT_TRUE(registry.RemoveSeries("strata_seen_seconds", {{"holder", "a"}}));
  EXPECT_FALSE(registry.RemoveSeries("strata_seen_seconds", {{"holder", "a"}}));
  EXPECT_FALSE(registry.RemoveSeries("strata_other", {}));
  std::string text = registry.RenderText();
  EXPECT_EQ(text.find("holder=\"a\""), std::string::npos) << text;
  EXPECT_NE(text.find("strata_seen_seconds{holder=\"b\"} 2"), std::string::npos) << text;
  // The last series of a family takes the family (its HELP and TYPE) with it.
  EXPECT_TRUE(registry.RemoveSeries("strata_seen_seconds", {{"holder", "b"}}));
  EXPECT_EQ(registry.RenderText().find("strata_seen_seconds"), std::string::npos);
  registry.AddGaugeCallback("strata_seen_seconds", "S.", {{"holder", "a"}}, [] { return 3.0; });
  EXPECT_NE(registry.RenderText().find("strata_seen_seconds{holder=\"a\"} 3"), std::string::npos);
}

TEST(MetricsDeathTest, DuplicateSeriesIsABug) {
  MetricsRegistry registry;
  registry.AddCounter("strata_x_total", "X.", {{"a", "1"}});
  EXPECT_DEATH(registry.AddCounter("strata_x_total", "X.", {{"a", "1"}}), "STRATA_CHECK");
  EXPECT_DEATH(registry.AddGauge("strata_x_total", "X."), "STRATA_CHECK");
}

}  // namespace
}  // namespace strata
