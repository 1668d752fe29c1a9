#include "common/daemon.h"

#include <httplib.h>

#include <atomic>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strata {
namespace {

using ::testing::HasSubstr;

TEST(MetricsHttpServer, ServesMetricsAndHealth) {
  MetricsRegistry registry;
  registry.AddCounter("strata_test_total", "A test counter.").Increment(3);
  std::atomic<bool> healthy = true;
  auto server = MetricsHttpServer::Start("127.0.0.1", 0, registry, [&] { return healthy.load(); });
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->port());
  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_THAT(metrics->body, HasSubstr("strata_test_total 3\n"));
  EXPECT_THAT(metrics->get_header_value("Content-Type"), HasSubstr("version=0.0.4"));
  EXPECT_EQ(client.Get("/healthz")->status, 200);
  healthy = false;
  EXPECT_EQ(client.Get("/healthz")->status, 503);
  EXPECT_EQ(client.Get("/nothing")->status, 404);
}

TEST(MetricsHttpServer, RefusesAPortThatIsInUse) {
  MetricsRegistry registry;
  auto first = MetricsHttpServer::Start("127.0.0.1", 0, registry, nullptr);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = MetricsHttpServer::Start("127.0.0.1", (*first)->port(), registry, nullptr);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("cannot listen"));
}

}  // namespace
}  // namespace strata
