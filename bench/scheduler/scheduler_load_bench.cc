// Routing under load: 64 workers and 4 kvstores register, inventories put millions of blocks in the
// index, then 100k requests (Zipf-popular shared prefixes plus new blocks, each reported stored by the
// chosen worker, heartbeats every 100 requests) are routed. Prints the latency of Scheduler::Route
// (in-process, keys precomputed), of routing by token ids (keys computed, SHA-256 per block), and of the
// Route RPC over loopback gRPC; and the memory of the index (hash-table bytes, RSS growth).
//
//   build/bin/strata_scheduler_load_bench [--routes N] [--documents N] [--blocks-per-document N]
//                                         [--grpc-routes N] [--json]
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "common/rpc.h"
#include "common/strings.h"
#include "proto/scheduler.grpc.pb.h"
#include "scheduler/block_index.h"
#include "scheduler/clock.h"
#include "scheduler/scheduler.h"
#include "scheduler/service.h"
#include "tests/scheduler/load_cluster.h"

namespace {

using namespace strata::scheduler;  // NOLINT: a benchmark main

// CPU time of this thread: what a route costs without the preemptions of a shared 2-vCPU VM.
double ThreadCpuUs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

double RssMiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  }
  return 0;
}

struct Latency {
  double p50_us = 0, p99_us = 0, p999_us = 0, max_us = 0, mean_us = 0;
};

Latency Summarize(std::vector<double> us) {
  Latency out;
  if (us.empty()) return out;
  std::sort(us.begin(), us.end());
  auto at = [&](double q) {
    return us[std::min(us.size() - 1, static_cast<size_t>(q * static_cast<double>(us.size())))];
  };
  out.p50_us = at(0.50);
  out.p99_us = at(0.99);
  out.p999_us = at(0.999);
  out.max_us = us.back();
  out.mean_us = std::accumulate(us.begin(), us.end(), 0.0) / static_cast<double>(us.size());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  testing::LoadSpec spec;
  int routes = 100000, grpc_routes = 10000, token_routes = 2000;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](int& into) {
      if (i + 1 >= argc || !absl::SimpleAtoi(argv[++i], &into)) {
        std::fprintf(stderr, "%s needs an integer\n", arg.c_str());
        std::exit(1);
      }
    };
    if (arg == "--routes")
      value(routes);
    else if (arg == "--grpc-routes")
      value(grpc_routes);
    else if (arg == "--documents")
      value(spec.documents);
    else if (arg == "--blocks-per-document")
      value(spec.blocks_per_document);
    else if (arg == "--json")
      json = true;
    else {
      std::fprintf(stderr, "unknown flag %s\n", arg.c_str());
      return 1;
    }
  }

  // In-process: the Scheduler on a simulated clock (200 requests/s of simulated time, about half the
  // cluster's prefill rate), timed on the wall clock.
  const double rss_start = RssMiB();
  SimClock clock;
  Scheduler scheduler(Options{}, &clock, nullptr);
  testing::LoadCluster cluster(&scheduler, spec);
  const absl::Time populate_start = absl::Now();
  if (absl::Status s = cluster.Populate(); !s.ok()) {
    std::fprintf(stderr, "populate: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  const double populate_s = absl::ToDoubleSeconds(absl::Now() - populate_start);
  const double rss_populated = RssMiB();
  const uint64_t blocks_populated = scheduler.IndexBlocks();

  std::vector<double> route_us, route_cpu_us;
  route_us.reserve(routes);
  route_cpu_us.reserve(routes);
  uint64_t prompt_blocks = 0;
  for (int i = 0; i < routes; ++i) {
    clock.Advance(absl::Milliseconds(5));
    if (i % 100 == 0 && !cluster.HeartbeatAll().ok()) return 1;
    const testing::LoadCluster::Request request = cluster.Next();
    prompt_blocks += request.route.keys.size();
    const double cpu_start = ThreadCpuUs();
    const absl::Time start = absl::Now();
    auto routed = scheduler.Route(request.route);
    route_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - start));
    route_cpu_us.push_back(ThreadCpuUs() - cpu_start);
    if (!routed.ok() || !cluster.Stored(routed->worker_id, request).ok()) return 1;
  }
  const Latency in_process = Summarize(route_us);
  const Latency in_process_cpu = Summarize(route_cpu_us);
  const double rss_end = RssMiB();

  // Token ids: the scheduler computes the keys (SHA-256 per block) before placing.
  std::vector<double> token_us, token_cpu_us;
  {
    std::mt19937 rng(7);
    for (int i = 0; i < token_routes; ++i) {
      TokenRoute route;
      route.model_fingerprint.fill(0x42);
      route.token_ids.resize(static_cast<size_t>(spec.blocks_per_document) * spec.block_tokens);
      for (int32_t& t : route.token_ids) t = static_cast<int32_t>(rng() % 128000);
      const double cpu_start = ThreadCpuUs();
      const absl::Time start = absl::Now();
      auto routed = scheduler.Route(route);
      token_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - start));
      token_cpu_us.push_back(ThreadCpuUs() - cpu_start);
      if (!routed.ok()) return 1;
    }
  }
  const Latency tokens = Summarize(token_us);
  const Latency tokens_cpu = Summarize(token_cpu_us);

  // Over loopback gRPC: a real server, its index filled the same way, one client thread.
  Latency over_grpc;
  if (grpc_routes > 0) {
    Options options;
    options.grpc_address = "127.0.0.1:0";
    options.metrics_host = "127.0.0.1";
    options.metrics_port = 0;
    options.lease = absl::Hours(1);
    auto server = SchedulerServer::Start(options);
    if (!server.ok()) return 1;
    testing::LoadSpec small = spec;
    small.documents = std::max(1, spec.documents / 10);
    testing::LoadCluster remote(&(*server)->scheduler(), small);
    if (!remote.Populate().ok()) return 1;
    auto channel =
        grpc::CreateChannel(strata::StrCat("127.0.0.1:", (*server)->grpc_port()), grpc::InsecureChannelCredentials());
    auto stub = strata::proto::Scheduler::NewStub(channel);
    std::vector<double> us;
    for (int i = 0; i < grpc_routes; ++i) {
      const testing::LoadCluster::Request request = remote.Next();
      strata::proto::RouteRequest rpc;
      rpc.set_model_fingerprint(std::string(32, '\x42'));
      rpc.set_block_keys(PackKeys(request.route.keys));
      rpc.set_prompt_tokens(request.route.prompt_tokens);
      strata::proto::RouteResponse response;
      grpc::ClientContext context;
      strata::SetDeadline(context, std::chrono::seconds(5));
      const absl::Time start = absl::Now();
      grpc::Status status = stub->Route(&context, rpc, &response);
      us.push_back(absl::ToDoubleMicroseconds(absl::Now() - start));
      if (!status.ok()) {
        std::fprintf(stderr, "route rpc: %s\n", status.error_message().c_str());
        return 1;
      }
    }
    over_grpc = Summarize(us);
    (*server)->Shutdown(absl::Seconds(1));
  }

  const uint64_t table_bytes = scheduler.IndexTableBytes();
  const uint64_t blocks_end = scheduler.IndexBlocks();
  // A departure scans the whole index under the scheduler's lock: routing waits this long.
  double deregister_ms = 0;
  for (const HolderSnapshot& holder : scheduler.Holders()) {
    if (holder.holder_id != testing::LoadCluster::WorkerId(0)) continue;
    const absl::Time start = absl::Now();
    if (!scheduler.Deregister(holder.holder_id, holder.epoch).ok()) return 1;
    deregister_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
  }
  if (json) {
    std::printf(
        "{\"workers\": %d, \"kvstores\": %d, \"routes\": %d, \"index_blocks_start\": %llu, \"index_blocks_end\": %llu, "
        "\"populate_s\": %.3f, \"route_p50_us\": %.2f, \"route_p99_us\": %.2f, \"route_p999_us\": %.2f, "
        "\"route_max_us\": %.2f, \"route_cpu_p50_us\": %.2f, \"route_cpu_p99_us\": %.2f, "
        "\"token_route_p50_us\": %.2f, \"token_route_p99_us\": %.2f, "
        "\"grpc_route_p50_us\": %.2f, \"grpc_route_p99_us\": %.2f, \"index_table_mib\": %.1f, "
        "\"rss_index_mib\": %.1f, \"rss_end_mib\": %.1f, \"deregister_ms\": %.1f}\n",
        spec.workers, spec.kvstores, routes, static_cast<unsigned long long>(blocks_populated),
        static_cast<unsigned long long>(blocks_end), populate_s, in_process.p50_us, in_process.p99_us,
        in_process.p999_us, in_process.max_us, in_process_cpu.p50_us, in_process_cpu.p99_us, tokens.p50_us,
        tokens.p99_us, over_grpc.p50_us, over_grpc.p99_us, static_cast<double>(table_bytes) / (1 << 20),
        rss_populated - rss_start, rss_end, deregister_ms);
    return 0;
  }
  std::printf("cluster: %d workers, %d kvstores; index %llu blocks after inventories (%.2f s), %llu after %d routes\n",
              spec.workers, spec.kvstores, static_cast<unsigned long long>(blocks_populated), populate_s,
              static_cast<unsigned long long>(blocks_end), routes);
  std::printf("mean prompt: %.1f blocks\n\n", static_cast<double>(prompt_blocks) / routes);
  std::printf("| path | requests | p50 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|\n");
  auto row = [](const char* name, int n, const Latency& l) {
    std::printf("| %s | %d | %.1f us | %.1f us | %.1f us | %.1f us |\n", name, n, l.p50_us, l.p99_us, l.p999_us,
                l.max_us);
  };
  row("Scheduler::Route, keys given (in-process)", routes, in_process);
  row("  same, thread CPU time", routes, in_process_cpu);
  row(strata::StrCat("Scheduler::Route, ", spec.blocks_per_document * spec.block_tokens, " token ids").c_str(),
      token_routes, tokens);
  row("  same, thread CPU time", token_routes, tokens_cpu);
  if (grpc_routes > 0) row("Route RPC, loopback gRPC, keys given", grpc_routes, over_grpc);
  std::printf(
      "\nindex memory: hash table %.1f MiB for %llu blocks (%.1f B/block); RSS +%.1f MiB after inventories, "
      "%.1f MiB at the end\n",
      static_cast<double>(table_bytes) / (1 << 20), static_cast<unsigned long long>(blocks_end),
      static_cast<double>(table_bytes) / static_cast<double>(blocks_end), rss_populated - rss_start, rss_end);
  std::printf("a worker's departure (Deregister of worker-0, a scan of the whole index): %.1f ms\n", deregister_ms);
  return 0;
}
