#include "bench/soak/soak.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "bench/cluster/completion_client.h"
#include "bench/cluster/trace_prompts.h"
#include "common/status.h"
#include "common/strings.h"
#include "scheduler/replay/trace.h"
#include "tests/faults/fault_processes.h"
#include "tests/testing/child_process.h"
#include "tests/testing/metrics_scrape.h"
#include "tests/testing/scratch_dir.h"
#include "tests/testing/tcp_proxy.h"

namespace strata::soak {
namespace {

using faults::Daemon;
using strata::testing::WaitFor;
using Clock = std::chrono::steady_clock;

constexpr std::chrono::seconds kRecoverTimeout{60};

// The cluster, each daemon restartable on its ports and directories.
class SoakCluster {
 public:
  explicit SoakCluster(const SoakOptions& options) : options_(options) {}

  absl::Status Start() {
    STRATA_RETURN_IF_ERROR(StartScheduler());
    STRATA_RETURN_IF_ERROR(StartKvstore());
    auto proxy = strata::testing::TcpProxy::Start(kvstore_port_);
    if (!proxy.ok()) return proxy.status();
    proxy_ = std::move(*proxy);
    workers_.resize(static_cast<size_t>(options_.workers));
    for (int i = 0; i < options_.workers; ++i) STRATA_RETURN_IF_ERROR(StartWorker(i));
    return WaitWhole();
  }

  // The workers' shared KV MAC secret, made once in the scratch directory.
  std::string MacKeyFile() {
    const std::filesystem::path path = dir_.path() / "kv-mac.key";
    if (!std::filesystem::exists(path)) {
      std::random_device random;
      std::string secret;
      for (int i = 0; i < 48; ++i) secret.push_back("0123456789abcdef"[random() % 16]);
      std::ofstream(path) << secret << "\n";
    }
    return path.string();
  }

  absl::Status StartScheduler() {
    Daemon::Spec spec{.name = "strata-scheduler",
                      .argv = {options_.scheduler_path, "serve", "--grpc-address", Address(scheduler_port_),
                               "--metrics-host", "127.0.0.1", "--metrics-port", std::to_string(scheduler_metrics_port_),
                               "--http-host", "127.0.0.1", "--http-port", std::to_string(http_port_), "--model-dir",
                               options_.model_dir, "--served-model-name", "soak", "--policy", "cache-aware",
                               "--lease-ms", std::to_string(options_.lease_ms), "--heartbeat-ms", "300"},
                      .metrics_port = scheduler_metrics_port_};
    STRATA_ASSIGN_OR_RETURN(scheduler_, Daemon::Start(std::move(spec)));
    if (!WaitFor([this] { return faults::Healthy(http_port_); }, kRecoverTimeout)) {
      return absl::DeadlineExceededError("the front door never answered /healthz");
    }
    return absl::OkStatus();
  }
  absl::Status StartKvstore() {
    std::filesystem::create_directories(dir_.path() / "kvstore-ssd");
    const std::string ssd_dir = std::filesystem::canonical(dir_.path() / "kvstore-ssd").string();
    Daemon::Spec spec{.name = "strata-kvstore",
                      .argv = {options_.kvstore_path, "--host", "127.0.0.1", "--port", std::to_string(kvstore_port_),
                               "--metrics-port", "0", "--dram-bytes", std::to_string(4 << 20), "--ssd-dir", ssd_dir,
                               "--ssd-bytes", std::to_string(4 << 20),
                               "--scheduler", Address(scheduler_port_), "--holder-id", "kvstore-0",
                               "--lease-ttl-ms", "5000", "--put-ttl-ms", "5000"},
                      .port_file = dir_.path() / "kvstore.ports"};
    if (disk_faults()) {
      spec.env = {StrCat("LD_PRELOAD=", options_.io_fault_shim), StrCat("STRATA_IO_FAULT_DIR=", ssd_dir),
                  StrCat("STRATA_IO_FAULT_CONTROL=", disk_control().string())};
    }
    STRATA_ASSIGN_OR_RETURN(kvstore_, Daemon::Start(std::move(spec)));
    return absl::OkStatus();
  }
  absl::Status StartWorker(int i) {
    Daemon::Spec spec{.name = StrCat("strata-worker ", i),
                      .argv = {options_.worker_path, "--model", options_.model_dir, "--grpc-address", "127.0.0.1:0",
                               "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--block-tokens", "16",
                               "--threads", "1", "--served-model-name", "soak", "--worker-id", StrCat("worker-", i),
                               "--scheduler", Address(scheduler_port_), "--kvstore", proxy_->address(),
                               "--host-cache-bytes", std::to_string(2 << 20),
                               // the cluster's KV MAC secret: one worker's kvstore blocks verify on another
                               "--kv-mac-key-file", MacKeyFile()},
                      .port_file = dir_.path() / StrCat("worker-", i, ".ports")};
    STRATA_ASSIGN_OR_RETURN(workers_[static_cast<size_t>(i)], Daemon::Start(std::move(spec)));
    return absl::OkStatus();
  }
  // Until the scheduler lists every worker and the kvstore.
  absl::Status WaitWhole() {
    if (!WaitFor([this] { return Holders("worker") == options_.workers && Holders("kvstore") == 1; },
                 kRecoverTimeout)) {
      return absl::DeadlineExceededError(StrCat("the scheduler lists ", Holders("worker"), " workers and ",
                                                Holders("kvstore"), " kvstores after ", kRecoverTimeout.count(), " s"));
    }
    return absl::OkStatus();
  }
  int Holders(const std::string& kind) const {
    return static_cast<int>(strata::testing::MetricValue(
                                scheduler_metrics_port_, StrCat("strata_scheduler_holders{kind=\"", kind, "\"}"))
                                .value_or(-1));
  }

  int http_port() const { return http_port_; }
  Daemon& scheduler() { return *scheduler_; }
  Daemon& kvstore() { return *kvstore_; }
  Daemon& worker(int i) { return *workers_[static_cast<size_t>(i)]; }
  strata::testing::TcpProxy& proxy() { return *proxy_; }

  bool disk_faults() const { return !options_.io_fault_shim.empty(); }
  // Every write to the kvstore's SSD directory fails ("enospc", "eio") or passes ("ok").
  void SetDisk(const std::string& mode) { faults::SetIoFault(disk_control(), mode); }

 private:
  static std::string Address(int port) { return StrCat("127.0.0.1:", port); }
  std::filesystem::path disk_control() const { return dir_.path() / "io-fault"; }

  const SoakOptions& options_;
  strata::testing::ScratchDir dir_ = strata::testing::MakeTempDir("strata-soak");
  int scheduler_port_ = faults::FreePort(), scheduler_metrics_port_ = faults::FreePort(),
      http_port_ = faults::FreePort(), kvstore_port_ = faults::FreePort();
  std::unique_ptr<Daemon> scheduler_, kvstore_;
  std::vector<std::unique_ptr<Daemon>> workers_;
  std::unique_ptr<strata::testing::TcpProxy> proxy_;
};

double Since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

}  // namespace

absl::StatusOr<SoakReport> RunSoak(const SoakOptions& options) {
  // Prompts: the head of the trace, capped so that a 2-core machine serves a few per second.
  STRATA_ASSIGN_OR_RETURN(std::vector<scheduler::replay::TraceRequest> trace,
                          scheduler::replay::ReadMooncakeTrace(options.trace_path));
  trace.resize(std::min(trace.size(), options.prompts));
  STRATA_ASSIGN_OR_RETURN(cluster_bench::ModelLimits limits, cluster_bench::ReadModelLimits(options.model_dir));
  cluster_bench::PromptOptions prompt_options;
  prompt_options.vocab_size = limits.vocab_size;
  prompt_options.max_prompt_tokens = std::min(options.max_prompt_tokens, limits.max_context_tokens - options.max_tokens);
  prompt_options.max_output_tokens = options.max_tokens;
  STRATA_ASSIGN_OR_RETURN(std::vector<cluster_bench::BenchRequest> prompts,
                          cluster_bench::MakeRequests(trace, prompt_options));

  setenv("OMP_WAIT_POLICY", "passive", 1);  // several daemons on few cores: idle OpenMP threads must sleep
  SoakCluster cluster(options);
  STRATA_RETURN_IF_ERROR(cluster.Start());
  const cluster_bench::CompletionClient client({.port = cluster.http_port(), .timeout_s = 60});
  auto request_for = [&](size_t i, bool cache) {
    cluster_bench::CompletionRequest request{.model = "soak", .prompt_ids = prompts[i].prompt_ids,
                                             .max_tokens = prompts[i].max_tokens, .stream = true};
    request.disable_prefix_cache = !cache;
    return request;
  };
  // The reference answers: each prompt once, before any fault, with the prefix cache off.
  std::vector<std::string> reference(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    const cluster_bench::CompletionResult result = client.Complete(request_for(i, false));
    if (!result.ok) return absl::InternalError(StrCat("reference answer for prompt ", i, ": ", result.error));
    reference[i] = result.text;
  }

  SoakReport report;
  auto rss = [&](Daemon& daemon) { return daemon.RssBytes(); };
  report.memory.push_back({"strata-scheduler", rss(cluster.scheduler()), 0, 0});
  report.memory.push_back({"strata-kvstore", rss(cluster.kvstore()), 0, 0});
  for (int i = 0; i < options.workers; ++i) report.memory.push_back({StrCat("strata-worker-", i), rss(cluster.worker(i)), 0, 0});

  const Clock::time_point start = Clock::now();
  std::mutex mutex;  // guards report.faults and the failure bookkeeping
  // A failure is put down to a fault when it ends within this long after the fault ended: leases and
  // reconnects settle, and a request routed just before may still land on the dead incarnation.
  const double grace_s = 3.0 * options.lease_ms / 1000.0 + 2.0;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> served{0}, wrong{0};
  std::vector<std::jthread> load;
  for (int t = 0; t < options.concurrency; ++t) {
    load.emplace_back([&, t] {
      std::mt19937_64 random(options.seed * 100 + static_cast<uint64_t>(t));
      while (!stop.load()) {
        const size_t i = random() % prompts.size();
        const cluster_bench::CompletionResult result = client.Complete(request_for(i, true));
        const double at = Since(start);
        if (result.ok && result.text == reference[i]) {
          ++served;
          continue;
        }
        if (result.ok) {
          ++wrong;
          std::lock_guard lock(mutex);
          report.unexplained.push_back(StrCat("WRONG prompt ", i, " at ", at, " s: '", result.text, "'"));
          continue;
        }
        std::lock_guard lock(mutex);
        ++report.failed;
        FaultRecord* cause = nullptr;
        for (FaultRecord& fault : report.faults) {
          if (at >= fault.start_s && (fault.end_s == 0 || at <= fault.end_s + grace_s)) cause = &fault;
        }
        if (cause != nullptr) {
          ++cause->failures;
          ++report.failures_by_fault[cause->kind];
        } else {
          ++report.unexplained_failures;
          if (report.unexplained.size() < 20) report.unexplained.push_back(StrCat("at ", at, " s: ", result.error));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));  // a client's pause before retrying
      }
    });
  }

  auto daemon_of = [&](int memory_index) -> Daemon* {
    if (memory_index == 0) return &cluster.scheduler();
    if (memory_index == 1) return &cluster.kvstore();
    return &cluster.worker(memory_index - 2);
  };
  // The fault injector, on this thread.
  std::mt19937_64 random(options.seed);
  std::exponential_distribution<double> interval(1.0 / options.mean_fault_interval_s);
  std::vector<std::string> kinds = {"kill_kvstore", "kill_worker", "kill_scheduler", "freeze_kvstore_path"};
  if (cluster.disk_faults()) kinds.push_back("fail_kvstore_disk");
  absl::Status broken = absl::OkStatus();
  while (broken.ok()) {
    const double wait_s = std::clamp(interval(random), 2.0, 4.0 * options.mean_fault_interval_s);
    if (Since(start) + wait_s >= options.duration_s) break;
    std::this_thread::sleep_for(std::chrono::duration<double>(wait_s));  // the pause between faults
    const std::string kind = kinds[random() % kinds.size()];
    size_t index;
    {
      std::lock_guard lock(mutex);
      report.faults.push_back({kind, Since(start), 0, 0});
      index = report.faults.size() - 1;
    }
    if (options.verbose) std::fprintf(stderr, "soak: %.1f s: %s\n", Since(start), kind.c_str());
    int restarted = -1;  // index into report.memory
    if (kind == "kill_kvstore") {
      cluster.kvstore().Kill();
      std::this_thread::sleep_for(std::chrono::milliseconds(500 + random() % 2000));  // down for a while
      broken = cluster.StartKvstore();
      restarted = 1;
    } else if (kind == "kill_worker") {
      const int i = static_cast<int>(random() % static_cast<uint64_t>(options.workers));
      cluster.worker(i).Kill();
      std::this_thread::sleep_for(std::chrono::milliseconds(500 + random() % 2000));
      broken = cluster.StartWorker(i);
      restarted = 2 + i;
    } else if (kind == "kill_scheduler") {
      cluster.scheduler().Kill();
      std::this_thread::sleep_for(std::chrono::milliseconds(200 + random() % 1000));
      broken = cluster.StartScheduler();
      restarted = 0;
    } else if (kind == "fail_kvstore_disk") {
      cluster.SetDisk(random() % 2 == 0 ? "enospc" : "eio");
      std::this_thread::sleep_for(std::chrono::milliseconds(2000 + random() % 6000));  // until the disk is back
      cluster.SetDisk("ok");
    } else {
      cluster.proxy().Freeze();
      std::this_thread::sleep_for(std::chrono::milliseconds(1000 + random() % 5000));  // the stall's length
      if (random() % 2 == 0) cluster.proxy().Cut();
      cluster.proxy().Thaw();
    }
    if (broken.ok()) broken = cluster.WaitWhole();
    // A restarted daemon's growth is measured from its new incarnation's start.
    if (restarted >= 0) ++report.memory[static_cast<size_t>(restarted)].restarts;
    if (broken.ok() && restarted >= 0) report.memory[static_cast<size_t>(restarted)].start_rss_bytes = rss(*daemon_of(restarted));
    std::lock_guard lock(mutex);
    report.faults[index].end_s = Since(start);
  }
  // Let the last requests finish before the numbers are taken.
  const double left_s = options.duration_s - Since(start);
  if (broken.ok() && left_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(left_s));
  stop = true;
  load.clear();
  if (!broken.ok()) return absl::InternalError(StrCat("the cluster could not be brought back: ", broken.message()));

  report.duration_s = Since(start);
  report.served = served.load();
  report.wrong = wrong.load();
  report.memory[0].end_rss_bytes = rss(cluster.scheduler());
  report.memory[1].end_rss_bytes = rss(cluster.kvstore());
  for (int i = 0; i < options.workers; ++i) report.memory[2 + static_cast<size_t>(i)].end_rss_bytes = rss(cluster.worker(i));
  return report;
}

nlohmann::json SoakReport::ToJson() const {
  nlohmann::json out = {{"duration_s", duration_s}, {"served", served}, {"failed", failed},
                        {"unexplained_failures", unexplained_failures}, {"wrong", wrong},
                        {"failures_by_fault", failures_by_fault}, {"unexplained", unexplained}};
  for (const FaultRecord& fault : faults) {
    out["faults"].push_back({{"kind", fault.kind}, {"start_s", fault.start_s}, {"end_s", fault.end_s},
                             {"failures", fault.failures}});
  }
  for (const DaemonMemory& daemon : memory) {
    out["memory"].push_back({{"name", daemon.name}, {"start_rss_bytes", daemon.start_rss_bytes},
                             {"end_rss_bytes", daemon.end_rss_bytes}, {"restarts", daemon.restarts}});
  }
  return out;
}

std::string SoakReport::ToText() const {
  std::string out = StrCat("soak: ", static_cast<int>(duration_s), " s, ", served, " requests served, ", failed,
                           " failed (", unexplained_failures, " unexplained), ", wrong, " wrong outputs\n");
  std::map<std::string, int> count;
  for (const FaultRecord& fault : faults) ++count[fault.kind];
  for (const auto& [kind, n] : count) {
    const auto failures = failures_by_fault.find(kind);
    absl::StrAppend(&out, "  fault ", kind, ": ", n, " times, ",
                    failures == failures_by_fault.end() ? 0 : failures->second, " failed requests\n");
  }
  for (const DaemonMemory& daemon : memory) {
    absl::StrAppend(&out, "  ", daemon.name, ": RSS ", daemon.start_rss_bytes >> 20, " MiB -> ",
                    daemon.end_rss_bytes >> 20, " MiB",
                    daemon.restarts > 0 ? StrCat(" (", daemon.restarts, " restarts: the last incarnation's)") : "",
                    "\n");
  }
  for (const std::string& line : unexplained) absl::StrAppend(&out, "  ", line, "\n");
  return out;
}

}  // namespace strata::soak
