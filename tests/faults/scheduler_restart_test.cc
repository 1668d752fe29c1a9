// strata-scheduler (with its front door) killed with SIGKILL while requests stream through it, and
// started again on the same ports: every request in flight ends, with its full correct answer or with an
// error (never a hang, never other tokens); the workers and the kvstore register again once the new
// incarnation is up (well within a lease); a request after that succeeds; and cache-aware placement
// sees the blocks again once the holders' inventories arrive.
#include <atomic>
#include <thread>

#include "bench/cluster/completion_client.h"
#include "common/strings.h"
#include "gtest/gtest.h"
#include "tests/cluster/local_cluster.h"
#include "tests/faults/fault_processes.h"
#include "tests/testing/metrics_scrape.h"
#include "tests/testing/scratch_dir.h"

namespace strata::faults {
namespace {

using strata::testing::MetricValue;
using strata::testing::WaitFor;

constexpr int kLeaseMs = 1500;

struct Cluster {
  strata::testing::ScratchDir dir = strata::testing::MakeTempDir("strata-faults-scheduler");
  int grpc_port = FreePort(), metrics_port = FreePort(), http_port = FreePort();
  std::unique_ptr<Daemon> scheduler, kvstore;
  std::vector<std::unique_ptr<Daemon>> workers;

  absl::Status StartScheduler() {
    Daemon::Spec spec{.name = "strata-scheduler",
                      .argv = {STRATA_SCHEDULER_PATH, "serve", "--grpc-address", StrCat("127.0.0.1:", grpc_port),
                               "--metrics-host", "127.0.0.1", "--metrics-port", std::to_string(metrics_port),
                               "--http-host", "127.0.0.1", "--http-port", std::to_string(http_port), "--model-dir",
                               ModelDir(), "--served-model-name", "llama3-tiny", "--policy", "cache-aware",
                               "--lease-ms", std::to_string(kLeaseMs), "--heartbeat-ms", "300"},
                      .metrics_port = metrics_port};
    auto scheduler_or = Daemon::Start(std::move(spec));
    if (!scheduler_or.ok()) return scheduler_or.status();
    scheduler = std::move(*scheduler_or);
    if (!WaitFor([this] { return Healthy(http_port); }, std::chrono::seconds(30))) {
      return absl::DeadlineExceededError("the front door never answered /healthz");
    }
    return absl::OkStatus();
  }
  int Holders(const std::string& kind) const {
    return static_cast<int>(
        MetricValue(metrics_port, StrCat("strata_scheduler_holders{kind=\"", kind, "\"}")).value_or(-1));
  }
};

TEST(SchedulerRestartTest, RequestsInFlightEndCleanlyAndRoutingRecoversWithinALease) {
  if (const std::string missing = MissingBinaries(); !missing.empty()) GTEST_SKIP() << missing;
  Cluster c;
  ASSERT_TRUE(c.StartScheduler().ok());
  const int kvstore_port = FreePort();
  auto kvstore = StartKvstore(kvstore_port, c.dir.path() / "kvstore.ports",
                              {"--dram-bytes", std::to_string(64 << 20), "--scheduler",
                               StrCat("127.0.0.1:", c.grpc_port), "--holder-id", "kvstore-0"});
  ASSERT_TRUE(kvstore.ok()) << kvstore.status();
  c.kvstore = std::move(*kvstore);
  for (int i = 0; i < 2; ++i) {
    auto worker = StartWorker(c.dir.path() / StrCat("worker-", i, ".ports"),
                              {"--scheduler", StrCat("127.0.0.1:", c.grpc_port), "--kvstore",
                               StrCat("127.0.0.1:", kvstore_port), "--kvstore-fetch", "always", "--worker-id",
                               StrCat("worker-", i)});
    ASSERT_TRUE(worker.ok()) << worker.status();
    c.workers.push_back(std::move(*worker));
  }
  ASSERT_TRUE(WaitFor([&] { return c.Holders("worker") == 2 && c.Holders("kvstore") == 1; }, std::chrono::seconds(30)));

  // Six prompts (two sharing a 2-block prefix each) and their answers with the prefix cache off.
  cluster_bench::CompletionClient client({.port = c.http_port, .timeout_s = 30});
  std::vector<cluster_bench::CompletionRequest> requests;
  std::vector<std::string> expected;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> prompt = cluster_testing::Tokens(300 + static_cast<uint64_t>(i / 2), 32);
    const std::vector<int32_t> tail = cluster_testing::Tokens(400 + static_cast<uint64_t>(i), 9);
    prompt.insert(prompt.end(), tail.begin(), tail.end());
    cluster_bench::CompletionRequest request{.model = "llama3-tiny", .prompt_ids = prompt, .max_tokens = 24};
    request.disable_prefix_cache = true;
    const cluster_bench::CompletionResult cold = client.Complete(request);
    ASSERT_TRUE(cold.ok) << cold.error;
    expected.push_back(cold.text);
    request.disable_prefix_cache = false;
    requests.push_back(request);
  }

  // Load from three threads; the scheduler dies under it and comes back.
  std::atomic<bool> stop{false};
  std::atomic<int> served{0}, failed{0}, wrong{0};
  std::vector<std::jthread> load;
  for (int t = 0; t < 3; ++t) {
    load.emplace_back([&, t] {
      for (size_t n = static_cast<size_t>(t); !stop.load(); ++n) {
        const size_t i = n % requests.size();
        const cluster_bench::CompletionResult result = client.Complete(requests[i]);
        if (!result.ok) {
          ++failed;  // refused, reset or an error event: a clean failure (a hang would hit timeout_s)
          std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a client's retry pause
        } else if (result.text != expected[i]) {
          ++wrong;
          ADD_FAILURE() << "request " << i << " answered '" << result.text << "', expected '" << expected[i] << "'";
        } else {
          ++served;
        }
      }
    });
  }
  ASSERT_TRUE(WaitFor([&] { return served.load() >= 6; }, std::chrono::seconds(60)));
  ASSERT_TRUE(WaitFor([&] { return MetricValue(c.metrics_port, "strata_scheduler_index_blocks").value_or(0) > 0; },
                      std::chrono::seconds(20)));
  c.scheduler->Kill();
  const int served_before = served.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the front door is gone for a while
  ASSERT_TRUE(c.StartScheduler().ok());
  const auto restarted = std::chrono::steady_clock::now();
  // Every holder registers again with the new incarnation; it has no lease of the old one to wait out.
  ASSERT_TRUE(WaitFor([&] { return c.Holders("worker") == 2 && c.Holders("kvstore") == 1; }, std::chrono::seconds(30)))
      << "holders after the restart: " << c.Holders("worker") << " workers, " << c.Holders("kvstore") << " kvstores";
  const double registered_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - restarted).count();
  // Their inventories refill the block index: cache-aware placement sees the cached prefixes again.
  EXPECT_TRUE(WaitFor([&] { return MetricValue(c.metrics_port, "strata_scheduler_index_blocks").value_or(0) > 0; },
                      std::chrono::seconds(30)));
  EXPECT_TRUE(WaitFor([&] { return served.load() >= served_before + 6; }, std::chrono::seconds(60)))
      << "requests do not succeed after the restart";
  stop = true;
  load.clear();

  const cluster_bench::CompletionResult after = client.Complete(requests[0]);
  ASSERT_TRUE(after.ok) << after.error;
  EXPECT_EQ(after.text, expected[0]);
  EXPECT_GT(after.usage.cached_tokens, 0u) << "the prefix cache should serve a repeated prompt after the restart";
  EXPECT_EQ(wrong.load(), 0);
  std::printf("scheduler kill -9 under load: %d requests served with the expected text, %d failed cleanly, %d "
              "wrong; holders registered again %.2f s after the restart (lease %d ms)\n",
              served.load(), failed.load(), wrong.load(), registered_s, kLeaseMs);
}

}  // namespace
}  // namespace strata::faults
