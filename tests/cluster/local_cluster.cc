#include "tests/cluster/local_cluster.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/status.h"
#include "common/strings.h"
#include "tests/testing/loopback.h"

namespace strata::cluster_testing {
namespace {

using strata::testing::ChildOutput;
using strata::testing::ChildProcess;
using strata::testing::WaitFor;

constexpr std::chrono::seconds kStartTimeout{60};

using strata::testing::FreePort;
using strata::testing::Healthy;

// Reads "grpc_port=N metrics_port=M" once both are there.
bool ReadPortFile(const std::filesystem::path& path, int& grpc_port, int& metrics_port) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t g = text.find("grpc_port="), m = text.find("metrics_port=");
  if (g == std::string::npos || m == std::string::npos || text.find('\n') == std::string::npos) return false;
  grpc_port = std::atoi(text.c_str() + g + 10);
  metrics_port = std::atoi(text.c_str() + m + 13);
  return grpc_port > 0 && metrics_port > 0;
}

absl::Status WaitServing(ChildProcess& process, const std::string& name, const std::function<bool()>& ready) {
  bool exited = false;
  const bool ok = WaitFor(
      [&] {
        if (process.Wait(std::chrono::milliseconds(0)).has_value()) {
          exited = true;
          return true;
        }
        return ready();
      },
      kStartTimeout);
  if (exited) return absl::UnavailableError(StrCat(name, " exited during start-up (its log is above)"));
  if (!ok) return absl::DeadlineExceededError(StrCat(name, " not serving after ", kStartTimeout.count(), " s"));
  return absl::OkStatus();
}

}  // namespace

std::string LocalCluster::ModelDir() { return std::string(STRATA_TEST_DATA_DIR) + "/models/llama3-tiny"; }

std::string LocalCluster::MissingBinaries() {
  std::string missing;
  for (const char* path : {STRATA_SCHEDULER_PATH, STRATA_KVSTORE_PATH, STRATA_WORKER_PATH}) {
    if (access(path, X_OK) != 0) absl::StrAppend(&missing, missing.empty() ? "" : ", ", path);
  }
  return missing.empty() ? "" : StrCat("not built: ", missing);
}

absl::StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(ClusterOptions options) {
  setenv("OMP_WAIT_POLICY", "passive", 1);  // several workers on 2 cores: idle OpenMP threads must sleep
  if (options.schedulers < 1) return absl::InvalidArgumentError("a cluster needs at least one scheduler");
  if (options.kvstores < 1) return absl::InvalidArgumentError("a cluster needs at least one kvstore");
  std::unique_ptr<LocalCluster> cluster(new LocalCluster());
  cluster->options_ = std::move(options);
  LocalCluster* raw = cluster.get();
  const ClusterOptions& o = raw->options_;
  if (o.hosts != nullptr) {
    auto valid = [&](int host) { return host >= 0 && host < o.hosts->size(); };
    bool ok = valid(o.kvstore_host) && !o.worker_hosts.empty() &&
              static_cast<int>(o.scheduler_hosts.size()) >= o.schedulers;
    for (int host : o.scheduler_hosts) ok = ok && valid(host);
    for (int host : o.worker_hosts) ok = ok && valid(host);
    if (!ok) return absl::InvalidArgumentError(StrCat("a daemon placed outside the ", o.hosts->size(), " hosts"));
  }
  raw->schedulers_.resize(static_cast<size_t>(o.schedulers));
  for (int s = 0; s < o.schedulers; ++s) {
    raw->Place(raw->schedulers_[static_cast<size_t>(s)], o.scheduler_hosts.empty() ? -1 : o.scheduler_hosts[static_cast<size_t>(s)]);
    raw->schedulers_[static_cast<size_t>(s)].grpc_port = FreePort();
  }
  // Every replica's address is known before any holder starts: each holder lists them all.
  for (int s = 0; s < o.schedulers; ++s) STRATA_RETURN_IF_ERROR(raw->StartScheduler(s));
  raw->kvstores_.resize(static_cast<size_t>(o.kvstores));
  for (int k = 0; k < o.kvstores; ++k) {
    Daemon& kvstore = raw->kvstores_[static_cast<size_t>(k)];
    raw->Place(kvstore, o.kvstore_host);
    kvstore.grpc_port = FreePort();
    STRATA_RETURN_IF_ERROR(raw->StartKvstore(k));
  }
  for (int i = 0; i < o.workers; ++i) STRATA_RETURN_IF_ERROR(raw->StartWorker(i));
  for (int s = 0; s < o.schedulers; ++s) {
    if (!WaitFor(
            [raw, s] {
              return raw->Holders("kvstore", s) == raw->kvstores() && raw->Holders("worker", s) == raw->workers();
            },
            kStartTimeout)) {
      return absl::DeadlineExceededError(StrCat("scheduler ", s, " lists ", raw->Holders("worker", s), " workers and ",
                                                raw->Holders("kvstore", s), " kvstores, not ", raw->workers(), " and ",
                                                raw->kvstores()));
    }
  }
  return cluster;
}

LocalCluster::~LocalCluster() = default;  // each ChildProcess SIGKILLs its process

void LocalCluster::Place(Daemon& daemon, int host) const {
  if (options_.hosts == nullptr) return;
  daemon.host_index = host;
  daemon.host = strata::testing::NetnsHosts::Address(host);
}

std::vector<std::string> LocalCluster::OnHost(const Daemon& daemon, std::vector<std::string> argv) const {
  if (options_.hosts == nullptr) return argv;
  // Between hosts UCX runs over TCP, as between machines (on one host it may pick shared memory).
  argv.insert(argv.begin(), {"/usr/bin/env", "UCX_TLS=tcp"});
  return options_.hosts->Command(daemon.host_index, argv);
}

std::vector<std::string> LocalCluster::SchedulerFlags() const {
  std::vector<std::string> flags;
  for (const Daemon& scheduler : schedulers_) {
    flags.push_back("--scheduler");
    flags.push_back(Address(scheduler));
  }
  return flags;
}

absl::Status LocalCluster::StartScheduler(int s) {
  Daemon& daemon = schedulers_.at(static_cast<size_t>(s));
  daemon.metrics_port = FreePort();
  daemon.http_port = FreePort();
  std::vector<std::string> argv = {STRATA_SCHEDULER_PATH, "serve", "--grpc-address", Address(daemon), "--metrics-host",
                                   daemon.host, "--metrics-port", std::to_string(daemon.metrics_port), "--http-host",
                                   daemon.host, "--http-port", std::to_string(daemon.http_port), "--model-dir",
                                   ModelDir(), "--served-model-name", "llama3-tiny", "--policy", options_.policy,
                                   "--lease-ms", std::to_string(options_.lease_ms), "--heartbeat-ms",
                                   std::to_string(options_.heartbeat_ms)};
  // One prefix cache for all of a test's callers, whatever their address or `user` (the front door's
  // default gives each client address its own).
  argv.push_back("--shared-prefix-cache");
  argv.insert(argv.end(), options_.scheduler_args.begin(), options_.scheduler_args.end());
  daemon.process = std::make_unique<ChildProcess>(OnHost(daemon, argv), ChildOutput::kInherit);
  return WaitServing(*daemon.process, StrCat("strata-scheduler ", s),
                     [&] { return Healthy(daemon.host, daemon.metrics_port) && Healthy(daemon.host, daemon.http_port); });
}

absl::Status LocalCluster::StartKvstore(int k) {
  Daemon& kvstore = kvstores_.at(static_cast<size_t>(k));
  // Kvstore 0 keeps the file names it had when a cluster had one kvstore.
  const std::string suffix = k == 0 ? "" : StrCat("-", k);
  const std::filesystem::path port_file = dir_.path() / StrCat("kvstore", suffix, ".port");
  std::filesystem::remove(port_file);
  std::vector<std::string> argv = {STRATA_KVSTORE_PATH, "--host", kvstore.host, "--port",
                                   std::to_string(kvstore.grpc_port), "--metrics-port", "0", "--port-file",
                                   port_file.string(), "--dram-bytes", std::to_string(64 << 20), "--ssd-dir",
                                   (dir_.path() / StrCat("kvstore-ssd", suffix)).string(), "--holder-id",
                                   StrCat("kvstore-", k)};
  const std::vector<std::string> schedulers = SchedulerFlags();
  argv.insert(argv.end(), schedulers.begin(), schedulers.end());
  argv.insert(argv.end(), options_.kvstore_args.begin(), options_.kvstore_args.end());
  kvstore.process = std::make_unique<ChildProcess>(OnHost(kvstore, argv), ChildOutput::kInherit);
  int grpc_port = 0;
  STRATA_RETURN_IF_ERROR(WaitServing(*kvstore.process, StrCat("strata-kvstore ", k), [&] {
    return ReadPortFile(port_file, grpc_port, kvstore.metrics_port) && Healthy(kvstore.host, kvstore.metrics_port);
  }));
  return absl::OkStatus();
}

absl::Status LocalCluster::StartWorker(int index, const std::vector<int>& kvstores) {
  std::vector<int> order = kvstores;
  if (order.empty()) {
    for (int k = 0; k < this->kvstores(); ++k) order.push_back(k);
  }
  for (int k : order) {
    if (k < 0 || k >= this->kvstores()) {
      return absl::InvalidArgumentError(StrCat("worker ", index, " given kvstore ", k, " of ", this->kvstores()));
    }
  }
  const std::filesystem::path port_file = dir_.path() / StrCat("worker-", index, ".port");
  Daemon daemon;
  if (!options_.worker_hosts.empty()) {
    Place(daemon, options_.worker_hosts[static_cast<size_t>(index) % options_.worker_hosts.size()]);
  }
  std::vector<std::string> argv = {STRATA_WORKER_PATH, "--model", ModelDir(), "--grpc-address",
                                   StrCat(daemon.host, ":0"), "--metrics-host", daemon.host, "--metrics-port", "0",
                                   "--port-file", port_file.string(), "--block-tokens",
                                   std::to_string(options_.block_tokens), "--threads", "1",
                                   "--served-model-name", "llama3-tiny", "--worker-id", StrCat("worker-", index),
                                   // A tiny model computes a block sooner than any fetch returns it, so the
                                   // fetch policy would stop fetching: these tests exercise the fetches.
                                   "--kvstore-fetch", "always",
                                   // The cluster's KV MAC secret: one worker's blocks verify on another.
                                   "--kv-mac-key-file", STRATA_TEST_DATA_DIR "/kv_mac.key"};
  for (int k : order) {
    argv.push_back("--kvstore");
    argv.push_back(kvstore_address(k));
  }
  const std::vector<std::string> schedulers = SchedulerFlags();
  argv.insert(argv.end(), schedulers.begin(), schedulers.end());
  argv.insert(argv.end(), options_.worker_args.begin(), options_.worker_args.end());
  daemon.process = std::make_unique<ChildProcess>(OnHost(daemon, argv), ChildOutput::kInherit);
  STRATA_RETURN_IF_ERROR(WaitServing(*daemon.process, StrCat("strata-worker ", index), [&] {
    return ReadPortFile(port_file, daemon.grpc_port, daemon.metrics_port) && Healthy(daemon.host, daemon.metrics_port);
  }));
  if (static_cast<int>(workers_.size()) <= index) workers_.resize(static_cast<size_t>(index) + 1);
  workers_[static_cast<size_t>(index)] = std::move(daemon);
  return absl::OkStatus();
}

void LocalCluster::KillKvstore(int k) { kvstores_.at(static_cast<size_t>(k)).process->Kill(); }

void LocalCluster::KillWorker(int i) { workers_.at(static_cast<size_t>(i)).process->Kill(); }

void LocalCluster::KillScheduler(int s) { schedulers_.at(static_cast<size_t>(s)).process->Kill(); }

absl::Status LocalCluster::WaitKvstoreRegistered(int k, const std::string& what) const {
  const double replicas = static_cast<double>(schedulers_.size());
  if (!WaitFor([this, k, replicas] { return KvstoreMetric(k, "strata_holder_agent_connected") == replicas; },
               kStartTimeout)) {
    return absl::DeadlineExceededError(StrCat("the ", what, " kvstore ", k, " never registered with all ",
                                              schedulers_.size(), " scheduler replicas"));
  }
  return absl::OkStatus();
}

absl::Status LocalCluster::RestartKvstore(int k, std::chrono::steady_clock::time_point* serving_at) {
  STRATA_RETURN_IF_ERROR(StartKvstore(k));
  if (serving_at != nullptr) *serving_at = std::chrono::steady_clock::now();
  // The new incarnation replaces the dead one's registration and sends its inventory, to every replica.
  return WaitKvstoreRegistered(k, "restarted");
}

absl::StatusOr<int> LocalCluster::AddKvstore() {
  const int k = kvstores();
  Daemon& kvstore = kvstores_.emplace_back();
  Place(kvstore, options_.kvstore_host);
  kvstore.grpc_port = FreePort();
  STRATA_RETURN_IF_ERROR(StartKvstore(k));
  STRATA_RETURN_IF_ERROR(WaitKvstoreRegistered(k, "added"));
  return k;
}

absl::StatusOr<int> LocalCluster::AddWorker(const std::vector<int>& kvstores) {
  const int index = workers();
  STRATA_RETURN_IF_ERROR(StartWorker(index, kvstores));
  int live = 0;
  for (Daemon& worker : workers_) live += worker.process->Wait(std::chrono::milliseconds(0)).has_value() ? 0 : 1;
  if (!WaitFor([this, live] { return Holders("worker") >= live; }, kStartTimeout)) {
    return absl::DeadlineExceededError("the added worker never registered");
  }
  return index;
}

std::optional<double> LocalCluster::SchedulerMetric(int s, const std::string& series) const {
  const Daemon& daemon = schedulers_.at(static_cast<size_t>(s));
  return MetricValue(daemon.host, daemon.metrics_port, series);
}

std::optional<double> LocalCluster::KvstoreMetric(int k, const std::string& series) const {
  const Daemon& daemon = kvstores_.at(static_cast<size_t>(k));
  return MetricValue(daemon.host, daemon.metrics_port, series);
}

std::optional<double> LocalCluster::WorkerMetric(int i, const std::string& series) const {
  const Daemon& daemon = workers_.at(static_cast<size_t>(i));
  return MetricValue(daemon.host, daemon.metrics_port, series);
}

int LocalCluster::Holders(const std::string& kind, int s) const {
  const std::optional<double> value = SchedulerMetric(s, StrCat("strata_scheduler_holders{kind=\"", kind, "\"}"));
  return value ? static_cast<int>(*value) : -1;
}

GenerateResult Generate(const std::string& worker_address, const std::vector<int32_t>& prompt_ids,
                        uint32_t max_new_tokens, bool disable_prefix_cache) {
  auto stub = proto::Worker::NewStub(grpc::CreateChannel(worker_address, grpc::InsecureChannelCredentials()));
  proto::GenerateRequest request;
  for (int32_t id : prompt_ids) request.add_prompt_ids(id);
  request.set_max_new_tokens(max_new_tokens);
  request.set_ignore_eos(true);
  request.set_disable_prefix_cache(disable_prefix_cache);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto reader = stub->Generate(&context, request);
  GenerateResult result;
  proto::GenerateResponse response;
  while (reader->Read(&response)) {
    result.ids.insert(result.ids.end(), response.token_ids().begin(), response.token_ids().end());
    if (response.finished()) result.prefix = response.prefix();
  }
  const grpc::Status status = reader->Finish();
  result.ok = status.ok();
  if (!status.ok()) result.error = StrCat("Generate on ", worker_address, ": ", status.error_message());
  return result;
}

std::vector<int32_t> Tokens(uint64_t seed, size_t count) {
  std::vector<int32_t> out(count);
  uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (int32_t& id : out) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 29;
    id = 16 + static_cast<int32_t>(x % (512 - 16));
  }
  return out;
}

}  // namespace strata::cluster_testing
