// A cluster across hosts in network namespaces (tests/testing/netns_hosts.h): the scheduler on one host,
// the kvstore on a second, a worker on each of a third and a fourth, every daemon bound to its host's
// address, UCX over TCP between them. A prefix computed on one worker's host reaches the other worker
// through the kvstore's host; a partition of a worker's or the kvstore's link loses no correct output,
// hangs nothing and ends with the index converged again (the time it takes is printed); netem delay and
// loss (where the kernel has sch_netem) and a throttled link (tbf) change no output. Skips, saying why,
// without root, `ip` or the daemons.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include "bench/cluster/completion_client.h"
#include "gtest/gtest.h"
#include "proto/scheduler.grpc.pb.h"
#include "tests/cluster/local_cluster.h"
#include "tests/testing/netns_hosts.h"

namespace strata::cluster_testing {
namespace {

using strata::testing::LinkState;
using strata::testing::NetnsHosts;
using strata::testing::WaitFor;

constexpr uint32_t kBlockTokens = 16;
// Host of each daemon: 0 the scheduler, 1 the kvstore, 2 and 3 the workers.
constexpr int kSchedulerHost = 0, kKvstoreHost = 1;

#define SKIP_WITHOUT_HOSTS()                                                             \
  do {                                                                                   \
    const std::string missing = LocalCluster::MissingBinaries();                         \
    if (!missing.empty()) GTEST_SKIP() << missing << " (make build builds them)";        \
    const std::string unavailable = NetnsHosts::Unavailable();                           \
    if (!unavailable.empty()) GTEST_SKIP() << "no hosts in network namespaces: " << unavailable; \
  } while (0)

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The four hosts and the cluster on them; the cluster goes first, then the hosts.
struct MultiHostCluster {
  std::unique_ptr<NetnsHosts> hosts;
  std::unique_ptr<LocalCluster> cluster;
};

absl::StatusOr<MultiHostCluster> StartOnFourHosts(ClusterOptions options = {}) {
  MultiHostCluster out;
  absl::StatusOr<std::unique_ptr<NetnsHosts>> hosts = NetnsHosts::Create(4);
  if (!hosts.ok()) return hosts.status();
  out.hosts = std::move(*hosts);
  options.hosts = out.hosts.get();
  options.scheduler_hosts = {kSchedulerHost};
  options.kvstore_host = kKvstoreHost;
  options.worker_hosts = {2, 3};
  absl::StatusOr<std::unique_ptr<LocalCluster>> cluster = LocalCluster::Start(std::move(options));
  if (!cluster.ok()) return cluster.status();
  out.cluster = std::move(*cluster);
  return out;
}

// The scheduler's view of each holder, by id (empty when it does not answer).
std::map<std::string, proto::HolderStatus> Holders(const std::string& scheduler_address) {
  auto stub = proto::Scheduler::NewStub(grpc::CreateChannel(scheduler_address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  proto::ListHoldersResponse response;
  std::map<std::string, proto::HolderStatus> out;
  if (!stub->ListHolders(&context, proto::ListHoldersRequest(), &response).ok()) return out;
  for (const proto::HolderStatus& holder : response.holders()) out[holder.holder_id()] = holder;
  return out;
}

// Blocks the scheduler's index names `holder_id` with (-1: not registered).
int64_t IndexBlocks(const LocalCluster& c, const std::string& holder_id) {
  const auto holders = Holders(c.scheduler_address());
  auto it = holders.find(holder_id);
  return it == holders.end() || it->second.resync_pending() ? -1 : static_cast<int64_t>(it->second.blocks());
}

double Metric(const std::optional<double>& value) { return value.value_or(-1); }

TEST(MultiHost, APrefixComputedOnOneHostIsFetchedThroughAKvstoreOnASecondByAWorkerOnAThird) {
  SKIP_WITHOUT_HOSTS();
  absl::StatusOr<MultiHostCluster> started = StartOnFourHosts();
  ASSERT_TRUE(started.ok()) << started.status();
  LocalCluster& c = *started->cluster;
  ASSERT_NE(c.worker_host(0), c.worker_host(1));
  ASSERT_NE(c.kvstore_host(), c.worker_host(0));
  ASSERT_NE(c.scheduler_host(), c.kvstore_host());

  const std::vector<int32_t> prefix = Tokens(1, 4 * kBlockTokens);
  const std::vector<int32_t> first = Concat(prefix, Tokens(2, 5));
  const std::vector<int32_t> second = Concat(prefix, Tokens(3, 7));
  const GenerateResult cold = Generate(c.worker_address(1), second, 12, /*disable_prefix_cache=*/true);
  ASSERT_TRUE(cold.ok) << cold.error;

  const GenerateResult on_first = Generate(c.worker_address(0), first, 12, false);
  ASSERT_TRUE(on_first.ok) << on_first.error;
  ASSERT_TRUE(WaitFor([&] { return Metric(c.KvstoreMetric("strata_kvstore_blocks{tier=\"dram\"}")) >= 4; },
                      std::chrono::seconds(20)))
      << "the kvstore on " << c.kvstore_host() << " never got the 4 prefix blocks of the worker on " << c.worker_host(0);

  const GenerateResult warm = Generate(c.worker_address(1), second, 12, false);
  ASSERT_TRUE(warm.ok) << warm.error;
  EXPECT_EQ(warm.prefix.cached_tokens_kvstore(), 4 * kBlockTokens)
      << "the worker on " << c.worker_host(1) << " did not fetch the prefix from " << c.kvstore_host();
  EXPECT_EQ(warm.prefix.prefill_tokens(), second.size() - 4 * kBlockTokens);
  EXPECT_EQ(warm.ids, cold.ids) << "ids after a fetch across hosts differ from a cold run";

  // The front door on the scheduler's host places and proxies across hosts too, and its index (fed from
  // the other hosts) places the second prompt where the first one's prefix is. (The front door's keys carry
  // its tenant salt, so the direct calls above left nothing it can reuse.)
  cluster_bench::CompletionClient::Options client_options;
  client_options.host = c.scheduler_host();
  client_options.port = c.http_port();
  client_options.timeout_s = 30;
  const cluster_bench::CompletionClient front_door(client_options);
  const cluster_bench::CompletionResult cold_text = front_door.Complete({"llama3-tiny", second, 12, true, true, true});
  ASSERT_TRUE(cold_text.ok) << cold_text.error;
  const cluster_bench::CompletionResult computed = front_door.Complete({"llama3-tiny", first, 12, true, true, false});
  ASSERT_TRUE(computed.ok) << computed.error;
  const cluster_bench::CompletionResult reused = front_door.Complete({"llama3-tiny", second, 12, true, true, false});
  ASSERT_TRUE(reused.ok) << reused.error;
  EXPECT_GE(reused.usage.cached_tokens, 4 * kBlockTokens);
  EXPECT_EQ(reused.text, cold_text.text);
}

// Requests sent through the front door while `fault` holds: each ends (none hangs) within its deadline
// plus a margin, and every one that succeeds has the cache-off text.
struct BurstOutcome {
  int ok = 0, failed = 0;
  double slowest_s = 0;
  std::vector<std::string> errors;
};

BurstOutcome Burst(const LocalCluster& c, const std::vector<std::vector<int32_t>>& prompts,
                   const std::vector<std::string>& expected, uint32_t max_tokens, int timeout_s) {
  cluster_bench::CompletionClient::Options client_options;
  client_options.host = c.scheduler_host();
  client_options.port = c.http_port();
  client_options.timeout_s = timeout_s;
  const cluster_bench::CompletionClient client(client_options);
  BurstOutcome outcome;
  std::mutex mutex;
  std::atomic<size_t> next{0};
  std::vector<std::jthread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < prompts.size();) {
        const cluster_bench::CompletionResult result =
            client.Complete({"llama3-tiny", prompts[i], max_tokens, true, true, false});
        std::lock_guard lock(mutex);
        outcome.slowest_s = std::max(outcome.slowest_s, result.total_s);
        if (result.ok) {
          ++outcome.ok;
          EXPECT_EQ(result.text, expected[i]) << "request " << i << " has wrong output under the fault";
        } else {
          ++outcome.failed;
          outcome.errors.push_back(result.error);
        }
      }
    });
  }
  threads.clear();  // joins
  return outcome;
}

// Prompts sharing 2-block prefixes and their cache-off texts.
void MakePrompts(const LocalCluster& c, int count, uint64_t seed, uint32_t max_tokens,
                 std::vector<std::vector<int32_t>>& prompts, std::vector<std::string>& expected) {
  cluster_bench::CompletionClient::Options client_options;
  client_options.host = c.scheduler_host();
  client_options.port = c.http_port();
  client_options.timeout_s = 30;
  const cluster_bench::CompletionClient client(client_options);
  for (int i = 0; i < count; ++i) {
    prompts.push_back(Concat(Tokens(seed + static_cast<uint64_t>(i % 3), 2 * kBlockTokens), Tokens(seed * 7 + i, 5)));
    const cluster_bench::CompletionResult cold =
        client.Complete({"llama3-tiny", prompts.back(), max_tokens, true, true, /*disable_prefix_cache=*/true});
    ASSERT_TRUE(cold.ok) << cold.error;
    expected.push_back(cold.text);
  }
}

// How long a request may take under a fault: a stream to a cut-off worker fails once the front door's
// keepalive (2 s pings, 2 s timeout; scheduler/frontdoor/worker_proxy.cc) gives the connection up, with
// the front door's default request deadline (600 s). kAnswerMarginS covers the 2-core machine's load.
constexpr int kKeepaliveS = 4;  // keepalive time + timeout
constexpr double kAnswerMarginS = 4;

ClusterOptions FaultOptions() { return ClusterOptions(); }

// Cuts `host`'s link, runs a burst through the front door (and `during_cut`, when given), restores the link
// and prints how long the index took after that to name `holder_id` with the blocks it named before the cut.
void PartitionAndHeal(MultiHostCluster& m, int host, const std::string& holder_id, uint64_t seed,
                      const std::function<void()>& during_cut = nullptr) {
  LocalCluster& c = *m.cluster;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> expected;
  MakePrompts(c, 9, seed, 8, prompts, expected);
  // Warm: the holder has blocks in the index.
  const BurstOutcome warm = Burst(c, prompts, expected, 8, 30);
  ASSERT_EQ(warm.failed, 0) << warm.errors.front();
  int64_t before = -1;
  ASSERT_TRUE(WaitFor(
      [&] {
        const int64_t now = IndexBlocks(c, holder_id);
        const bool settled = now > 0 && now == before;  // two reads agree: no event in flight
        before = now;
        return settled;
      },
      std::chrono::seconds(20)))
      << holder_id << " never had blocks in the index";

  ASSERT_TRUE(m.hosts->SetLink(host, LinkState::kDown).ok());
  // The holder's lease lapses; meanwhile requests either succeed with the right text or fail clearly.
  const BurstOutcome cut = Burst(c, prompts, expected, 8, kKeepaliveS + 20);
  EXPECT_LE(cut.slowest_s, kKeepaliveS + kAnswerMarginS) << "a request was held past the keepalive that should end it";
  for (const std::string& error : cut.errors) EXPECT_FALSE(error.empty());
  if (!cut.errors.empty()) std::cout << "a request failed during the cut with: " << cut.errors.front() << "\n";
  if (during_cut) during_cut();
  ASSERT_TRUE(WaitFor([&] { return IndexBlocks(c, holder_id) == -1; }, std::chrono::seconds(10)))
      << holder_id << " is still registered while cut off";
  // Out of placement, the rest of the cluster serves every request.
  const BurstOutcome settled = Burst(c, prompts, expected, 8, kKeepaliveS + 20);
  EXPECT_EQ(settled.failed, 0) << "with " << holder_id << " cut off and out of placement: " << settled.errors.front();
  std::cout << "partition of " << holder_id << ": during the cut " << cut.ok << " ok, " << cut.failed
            << " failed (slowest " << cut.slowest_s << " s); once out of placement " << settled.ok << " ok\n";

  ASSERT_TRUE(m.hosts->SetLink(host, LinkState::kUp).ok());
  const auto healed = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return IndexBlocks(c, holder_id) >= before; }, std::chrono::seconds(30)))
      << "the index names " << holder_id << " with " << IndexBlocks(c, holder_id) << " blocks, not " << before;
  const double converged_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - healed).count();
  std::cout << "index converged " << converged_s << " s after the link of " << holder_id << " came back ("
            << before << " blocks)\n";
  const BurstOutcome after = Burst(c, prompts, expected, 8, 30);
  EXPECT_EQ(after.failed, 0) << after.errors.front();
}

TEST(MultiHost, AWorkerCutOffByAPartitionFailsOnlyClearlyAndItsBlocksComeBackToTheIndexWhenItHeals) {
  SKIP_WITHOUT_HOSTS();
  absl::StatusOr<MultiHostCluster> started = StartOnFourHosts(FaultOptions());
  ASSERT_TRUE(started.ok()) << started.status();
  PartitionAndHeal(*started, /*host=*/2, started->cluster->worker_id(0), 40);
}

TEST(MultiHost, AKvstoreCutOffByAPartitionCostsRecomputationOnlyAndItsBlocksComeBackToTheIndexWhenItHeals) {
  SKIP_WITHOUT_HOSTS();
  absl::StatusOr<MultiHostCluster> started = StartOnFourHosts(FaultOptions());
  ASSERT_TRUE(started.ok()) << started.status();
  LocalCluster& c = *started->cluster;
  // A prefix only worker 0 computed, stored in the kvstore: worker 1 must fetch it, and while the kvstore
  // is cut off it must recompute it instead, with the same output, within a bounded time.
  const std::vector<int32_t> prompt = Concat(Tokens(70, 4 * kBlockTokens), Tokens(71, 5));
  const GenerateResult cold = Generate(c.worker_address(1), prompt, 8, /*disable_prefix_cache=*/true);
  ASSERT_TRUE(cold.ok) << cold.error;
  const double stored_before = Metric(c.KvstoreMetric("strata_kvstore_blocks{tier=\"dram\"}"));
  ASSERT_TRUE(Generate(c.worker_address(0), Concat(Tokens(70, 4 * kBlockTokens), Tokens(72, 3)), 8, false).ok);
  ASSERT_TRUE(WaitFor([&] { return Metric(c.KvstoreMetric("strata_kvstore_blocks{tier=\"dram\"}")) >= stored_before + 4; },
                      std::chrono::seconds(20)));
  PartitionAndHeal(*started, kKvstoreHost, "kvstore-0", 60, [&] {
    const auto start = std::chrono::steady_clock::now();
    const GenerateResult recomputed = Generate(c.worker_address(1), prompt, 8, false);
    const double took_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(recomputed.ok) << recomputed.error;
    EXPECT_EQ(recomputed.ids, cold.ids) << "output changed when the kvstore holding its prefix was cut off";
    EXPECT_EQ(recomputed.prefix.cached_tokens_kvstore(), 0u);
    EXPECT_LE(took_s, kKeepaliveS + kAnswerMarginS) << "a fetch from a cut-off kvstore held the request";
    std::cout << "a request whose prefix was only on the cut-off kvstore: recomputed in " << took_s << " s\n";
  });
}

// A slow link (tbf, which kernels without sch_netem have too): fetches across it are slower and still
// exact.
TEST(MultiHost, AThrottledKvstoreLinkSlowsFetchesAndChangesNoOutput) {
  SKIP_WITHOUT_HOSTS();
  absl::StatusOr<MultiHostCluster> started = StartOnFourHosts(FaultOptions());
  ASSERT_TRUE(started.ok()) << started.status();
  MultiHostCluster& m = *started;
  if (const absl::Status tbf = m.hosts->QdiscSupported("tbf rate 1mbit burst 16kb latency 100ms"); !tbf.ok()) {
    GTEST_SKIP() << "this kernel has no sch_tbf: " << tbf.message();
  }
  LocalCluster& c = *m.cluster;
  const std::vector<int32_t> prompt = Concat(Tokens(90, 4 * kBlockTokens), Tokens(91, 5));
  const GenerateResult cold = Generate(c.worker_address(1), prompt, 8, /*disable_prefix_cache=*/true);
  ASSERT_TRUE(cold.ok) << cold.error;
  ASSERT_TRUE(Generate(c.worker_address(0), Concat(Tokens(90, 4 * kBlockTokens), Tokens(92, 3)), 8, false).ok);
  ASSERT_TRUE(WaitFor([&] { return Metric(c.KvstoreMetric("strata_kvstore_blocks{tier=\"dram\"}")) >= 4; },
                      std::chrono::seconds(20)));
  // 1 Mbit/s each way: the 4 blocks' payload takes tens of milliseconds more than on a free link.
  ASSERT_TRUE(m.hosts->SetQdisc(kKvstoreHost, "tbf rate 1mbit burst 16kb latency 400ms").ok());
  const GenerateResult warm = Generate(c.worker_address(1), prompt, 8, false);
  ASSERT_TRUE(warm.ok) << warm.error;
  EXPECT_EQ(warm.prefix.cached_tokens_kvstore(), 4 * kBlockTokens) << "the fetch over the slow link was given up";
  EXPECT_EQ(warm.ids, cold.ids) << "ids after a fetch over a throttled link differ from a cold run";
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> expected;
  MakePrompts(c, 9, 95, 8, prompts, expected);
  const BurstOutcome outcome = Burst(c, prompts, expected, 8, kKeepaliveS + 20);
  EXPECT_EQ(outcome.failed, 0) << (outcome.errors.empty() ? "" : outcome.errors.front());
  ASSERT_TRUE(m.hosts->SetQdisc(kKvstoreHost, "").ok());
}

TEST(MultiHost, DelayAndLossOnTheKvstoresLinkChangeNoOutput) {
  SKIP_WITHOUT_HOSTS();
  {  // asked on a host of its own before a cluster is started for nothing
    absl::StatusOr<std::unique_ptr<NetnsHosts>> probe = NetnsHosts::Create(1);
    ASSERT_TRUE(probe.ok()) << probe.status();
    if (const absl::Status netem = (*probe)->QdiscSupported("netem"); !netem.ok()) {
      GTEST_SKIP() << "this kernel has no sch_netem (" << netem.message() << "): delay and loss are not tested; "
                   << "partitions and a throttled link are (MultiHost.A*)";
    }
  }
  absl::StatusOr<MultiHostCluster> started = StartOnFourHosts(FaultOptions());
  ASSERT_TRUE(started.ok()) << started.status();
  MultiHostCluster& m = *started;
  LocalCluster& c = *m.cluster;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> expected;
  MakePrompts(c, 9, 80, 8, prompts, expected);
  for (const char* discipline : {"netem delay 30ms 10ms", "netem loss 5%", "netem delay 20ms loss 2%"}) {
    ASSERT_TRUE(m.hosts->SetQdisc(kKvstoreHost, discipline).ok());
    const BurstOutcome outcome = Burst(c, prompts, expected, 8, kKeepaliveS + 20);
    EXPECT_EQ(outcome.failed, 0) << discipline << ": " << (outcome.errors.empty() ? "" : outcome.errors.front());
    EXPECT_LE(outcome.slowest_s, kKeepaliveS + kAnswerMarginS) << discipline;
    std::cout << discipline << ": " << outcome.ok << " ok, slowest " << outcome.slowest_s << " s\n";
  }
  ASSERT_TRUE(m.hosts->SetQdisc(kKvstoreHost, "").ok());
}

}  // namespace
}  // namespace strata::cluster_testing
