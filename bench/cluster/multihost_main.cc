// strata_multihost_bench: the control plane's faults, measured on a cluster across hosts in network
// namespaces (tests/testing/netns_hosts.h): two scheduler replicas (hosts 0 and 1, each with its front
// door), a kvstore (host 2) and two workers (hosts 3 and 4) on the tiny Llama, CPU.
//
//   1. Replica kill: a burst of streamed completions for --burst-s seconds, each sent to the next live
//      replica's front door; at half time replica 0 gets SIGKILL. Reports the requests lost, against the
//      floor: the requests replica 0 was streaming at that instant (a client cannot be answered by a front
//      door that died under it).
//   2. Partition: worker 0's link, then the kvstore's, is cut until its lease lapses on both replicas, then
//      restored; reports how long after that both replicas' indexes name the holder with the blocks they
//      named before the cut (--partitions rounds each).
//
// Needs root and iproute2 (`ip`); prints one table, and one JSON object with --json. Run through
// bench/cluster/multihost.sh (docs/BENCHMARKS.md, "multi-host").
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include "CLI/CLI.hpp"
#include "bench/cluster/completion_client.h"
#include "nlohmann/json.hpp"
#include "proto/scheduler.grpc.pb.h"
#include "tests/cluster/local_cluster.h"
#include "tests/testing/netns_hosts.h"

namespace {

using strata::cluster_testing::ClusterOptions;
using strata::cluster_testing::LocalCluster;
using strata::cluster_testing::Tokens;
using strata::testing::LinkState;
using strata::testing::NetnsHosts;
using strata::testing::WaitFor;
namespace cb = strata::cluster_bench;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Blocks replica `s`'s index names `holder_id` with; -1 while it is not registered there (or resyncing).
int64_t IndexBlocks(const LocalCluster& c, int s, const std::string& holder_id) {
  auto stub = strata::proto::Scheduler::NewStub(
      grpc::CreateChannel(c.scheduler_address(s), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  strata::proto::ListHoldersResponse response;
  if (!stub->ListHolders(&context, strata::proto::ListHoldersRequest(), &response).ok()) return -1;
  for (const auto& holder : response.holders()) {
    if (holder.holder_id() == holder_id) return holder.resync_pending() ? -1 : static_cast<int64_t>(holder.blocks());
  }
  return -1;
}

struct KillResult {
  int requests = 0, ok = 0, lost = 0, in_flight_on_killed = 0, wrong_output = 0;
  double burst_s = 0, requests_per_s_before = 0, requests_per_s_after = 0;
};

// The burst of step 1. Prompts share 3-block prefixes in 8 groups; every answer is compared with the
// cache-off answer of its prompt.
KillResult KillOneReplicaDuringABurst(LocalCluster& c, double burst_s, int concurrency) {
  cb::CompletionClient::Options options[2];
  for (int s = 0; s < 2; ++s) {
    options[s].host = c.scheduler_host(s);
    options[s].port = c.http_port(s);
    options[s].timeout_s = 60;
  }
  const cb::CompletionClient front_door[2] = {cb::CompletionClient(options[0]), cb::CompletionClient(options[1])};
  constexpr int kPrompts = 32;
  constexpr uint32_t kNewTokens = 16;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> expected;
  for (int i = 0; i < kPrompts; ++i) {
    std::vector<int32_t> prompt = Tokens(1000 + static_cast<uint64_t>(i % 8), 48);
    const std::vector<int32_t> tail = Tokens(2000 + static_cast<uint64_t>(i), 6);
    prompt.insert(prompt.end(), tail.begin(), tail.end());
    const cb::CompletionResult cold = front_door[1].Complete({"llama3-tiny", prompt, kNewTokens, true, true, true});
    if (!cold.ok) {
      std::cerr << "cache-off reference failed: " << cold.error << "\n";
      std::exit(1);
    }
    prompts.push_back(std::move(prompt));
    expected.push_back(cold.text);
  }

  KillResult result;
  std::mutex mutex;
  bool killed = false;
  int in_flight[2] = {0, 0};
  int done_before_kill = 0, done_after_kill = 0;
  const Clock::time_point start = Clock::now();
  const Clock::time_point kill_at = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(burst_s / 2));
  const Clock::time_point end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(burst_s));
  Clock::time_point killed_at;
  std::atomic<int> next{0};
  auto sender = [&] {
    while (Clock::now() < end) {
      const int i = next.fetch_add(1);
      int chosen;
      {
        std::lock_guard lock(mutex);
        chosen = killed ? 1 : i % 2;  // the client fails over to the live front door
        ++in_flight[chosen];
      }
      const cb::CompletionResult r = front_door[chosen].Complete({"llama3-tiny", prompts[i % kPrompts], kNewTokens, true, true, false});
      std::lock_guard lock(mutex);
      --in_flight[chosen];
      ++result.requests;
      (killed ? done_after_kill : done_before_kill) += 1;
      if (!r.ok) {
        ++result.lost;
      } else {
        ++result.ok;
        if (r.text != expected[i % kPrompts]) ++result.wrong_output;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < concurrency; ++t) threads.emplace_back(sender);
  std::this_thread::sleep_until(kill_at);  // the kill's moment is the benchmark's parameter, not a wait
  {
    std::lock_guard lock(mutex);
    c.KillScheduler(0);
    killed = true;
    killed_at = Clock::now();
    result.in_flight_on_killed = in_flight[0];
  }
  for (std::thread& thread : threads) thread.join();
  result.burst_s = Seconds(Clock::now() - start);
  result.requests_per_s_before = done_before_kill / Seconds(killed_at - start);
  result.requests_per_s_after = done_after_kill / Seconds(Clock::now() - killed_at);
  return result;
}

// Step 2, one round: the seconds from the link's return to every live replica's index naming `holder_id`
// with its blocks of before the cut; -1 when that did not happen within 60 s.
double PartitionRound(LocalCluster& c, NetnsHosts& hosts, int host, const std::string& holder_id,
                      const std::vector<int>& replicas) {
  std::map<int, int64_t> before;
  for (int s : replicas) {
    int64_t last = -2;
    WaitFor([&] {  // two equal reads: no event in flight
      const int64_t now = IndexBlocks(c, s, holder_id);
      const bool settled = now >= 0 && now == last;
      last = now;
      return settled;
    }, std::chrono::seconds(20));
    before[s] = last;
  }
  if (!hosts.SetLink(host, LinkState::kDown).ok()) return -1;
  WaitFor([&] {
    return std::all_of(replicas.begin(), replicas.end(), [&](int s) { return IndexBlocks(c, s, holder_id) == -1; });
  }, std::chrono::seconds(30));
  if (!hosts.SetLink(host, LinkState::kUp).ok()) return -1;
  const Clock::time_point healed = Clock::now();
  const bool converged = WaitFor([&] {
    return std::all_of(replicas.begin(), replicas.end(),
                       [&](int s) { return IndexBlocks(c, s, holder_id) >= before[s]; });
  }, std::chrono::seconds(60));
  return converged ? Seconds(Clock::now() - healed) : -1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"strata_multihost_bench: a scheduler replica killed during a burst; index convergence after partitions"};
  double burst_s = 60;
  int concurrency = 4, partitions = 3;
  bool json = false;
  app.add_option("--burst-s", burst_s, "length of the burst; replica 0 is killed at half of it")->capture_default_str();
  app.add_option("--concurrency", concurrency, "requests in flight")->capture_default_str();
  app.add_option("--partitions", partitions, "partition rounds per holder")->capture_default_str();
  app.add_flag("--json", json, "one JSON object instead of the table");
  CLI11_PARSE(app, argc, argv);

  if (const absl::Status status = strata::testing::EnterPrivateNetwork(); !status.ok()) {
    std::cerr << "strata_multihost_bench: cannot make hosts: " << status << "\n";
    return 1;
  }
  if (const std::string missing = LocalCluster::MissingBinaries(); !missing.empty()) {
    std::cerr << "strata_multihost_bench: " << missing << "\n";
    return 1;
  }
  absl::StatusOr<std::unique_ptr<NetnsHosts>> hosts = NetnsHosts::Create(5);
  if (!hosts.ok()) {
    std::cerr << "strata_multihost_bench: " << hosts.status() << "\n";
    return 1;
  }
  ClusterOptions options;
  options.schedulers = 2;
  options.hosts = hosts->get();
  options.scheduler_hosts = {0, 1};
  options.kvstore_host = 2;
  options.worker_hosts = {3, 4};
  absl::StatusOr<std::unique_ptr<LocalCluster>> cluster = LocalCluster::Start(options);
  if (!cluster.ok()) {
    std::cerr << "strata_multihost_bench: " << cluster.status() << "\n";
    return 1;
  }
  LocalCluster& c = **cluster;

  // Warm: each worker and the kvstore hold blocks, so that a partition has an index entry to lose and win back.
  {
    cb::CompletionClient::Options warm_options;
    warm_options.host = c.scheduler_host(0);
    warm_options.port = c.http_port(0);
    const cb::CompletionClient warm(warm_options);
    for (int i = 0; i < 16; ++i) {
      std::vector<int32_t> prompt = Tokens(3000 + static_cast<uint64_t>(i), 48);
      (void)warm.Complete({"llama3-tiny", prompt, 4, true, true, false});
    }
  }
  // Partitions first, with both replicas alive (each round measures both), then the kill.
  std::map<std::string, std::vector<double>> converge_s;
  for (int round = 0; round < partitions; ++round) {
    converge_s[c.worker_id(0)].push_back(PartitionRound(c, **hosts, 3, c.worker_id(0), {0, 1}));
    converge_s["kvstore-0"].push_back(PartitionRound(c, **hosts, 2, "kvstore-0", {0, 1}));
  }
  const KillResult kill = KillOneReplicaDuringABurst(c, burst_s, concurrency);

  nlohmann::json out;
  out["kill"] = {{"burst_s", kill.burst_s},
                 {"requests", kill.requests},
                 {"ok", kill.ok},
                 {"lost", kill.lost},
                 {"in_flight_on_killed_replica", kill.in_flight_on_killed},
                 {"wrong_output", kill.wrong_output},
                 {"requests_per_s_before", kill.requests_per_s_before},
                 {"requests_per_s_after", kill.requests_per_s_after}};
  for (const auto& [holder, rounds] : converge_s) out["index_convergence_s"][holder] = rounds;
  out["lease_ms"] = options.lease_ms;
  out["heartbeat_ms"] = options.heartbeat_ms;
  if (json) {
    std::cout << out.dump() << "\n";
  } else {
    std::printf("scheduler replica killed at %.0f s of a %.1f s burst (concurrency %d, 2 replicas):\n", burst_s / 2,
                kill.burst_s, concurrency);
    std::printf("  requests %d  ok %d  lost %d  (floor: %d in flight on the killed replica)  wrong output %d\n",
                kill.requests, kill.ok, kill.lost, kill.in_flight_on_killed, kill.wrong_output);
    std::printf("  requests/s before the kill %.2f, after %.2f\n", kill.requests_per_s_before,
                kill.requests_per_s_after);
    std::printf("index convergence after a partition heals (both replicas; lease %d ms, heartbeat %d ms):\n",
                options.lease_ms, options.heartbeat_ms);
    for (const auto& [holder, rounds] : converge_s) {
      std::printf("  %-10s", holder.c_str());
      for (double s : rounds) std::printf(" %6.2f s", s);
      std::printf("\n");
    }
  }
  return kill.wrong_output == 0 ? 0 : 1;
}
