#include "worker/cli/serve_command.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/file.h"
#include "common/hf_cache.h"
#include "common/log.h"
#include "common/status.h"
#include "common/strings.h"
#include "httplib.h"
#include "worker/cli/supervisor.h"
#include "worker/engine/cuda_backend.h"

namespace strata::cli {
namespace {

namespace fs = std::filesystem;

// The deployment's scratch directory (port files, the key files), removed with everything in it.
class RunDir {
 public:
  static absl::StatusOr<RunDir> Create() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = (fs::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") / "strata-serve-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      return absl::ErrnoToStatus(errno, StrCat("cannot create a run directory ", pattern));
    }
    return RunDir(pattern);
  }
  RunDir(RunDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  RunDir& operator=(RunDir&&) = delete;
  RunDir(const RunDir&) = delete;
  ~RunDir() {
    std::error_code error;
    if (!path_.empty()) fs::remove_all(path_, error);
  }
  const fs::path& path() const { return path_; }

 private:
  explicit RunDir(fs::path path) : path_(std::move(path)) {}
  fs::path path_;
};

// A file only its owner reads (0600), for secrets handed to the children.
absl::Status WriteSecretFile(const fs::path& path, std::string_view contents) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, S_IRUSR | S_IWUSR);
  if (fd < 0) return absl::ErrnoToStatus(errno, StrCat(path.string(), ": cannot create"));
  bool written = true;
  while (!contents.empty() && written) {
    const ssize_t n = ::write(fd, contents.data(), contents.size());
    written = n > 0 || (n < 0 && errno == EINTR);
    if (n > 0) contents.remove_prefix(static_cast<size_t>(n));
  }
  ::close(fd);
  if (!written) return absl::ErrnoToStatus(errno, StrCat(path.string(), ": cannot write"));
  return absl::OkStatus();
}

// 32 random bytes as hex: the workers' shared KV MAC secret for this deployment.
absl::StatusOr<std::string> RandomHexSecret() {
  std::ifstream random("/dev/urandom", std::ios::binary);
  unsigned char bytes[32];
  if (!random.read(reinterpret_cast<char*>(bytes), sizeof(bytes))) {
    return absl::UnavailableError("/dev/urandom: cannot read a KV MAC secret");
  }
  std::string hex;
  constexpr char kDigits[] = "0123456789abcdef";
  for (unsigned char byte : bytes) {
    hex.push_back(kDigits[byte >> 4]);
    hex.push_back(kDigits[byte & 15]);
  }
  return hex;
}

// The `name=N` fields of a daemon's port file, once it is whole (it ends with a newline); nullopt before.
std::optional<std::map<std::string, int>> ReadPortFile(const fs::path& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok() || text->empty() || text->back() != '\n') return std::nullopt;
  std::map<std::string, int> ports;
  for (absl::string_view field : absl::StrSplit(*text, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(field, absl::MaxSplits('=', 1));
    int port = 0;
    if (absl::SimpleAtoi(kv.second, &port)) ports[kv.first] = port;
  }
  return ports;
}

// Workers registered with the scheduler, from its /metrics (`strata_scheduler_holders{kind="worker"} N`).
int RegisteredWorkers(int metrics_port) {
  httplib::Client client("127.0.0.1", metrics_port);
  client.set_connection_timeout(1, 0);
  client.set_read_timeout(2, 0);
  httplib::Result result = client.Get("/metrics");
  if (!result || result->status != 200) return -1;
  constexpr std::string_view kSeries = "strata_scheduler_holders{kind=\"worker\"} ";
  const size_t at = result->body.find(kSeries);
  if (at == std::string::npos) return -1;
  double value = -1;
  const size_t end = result->body.find('\n', at);
  if (!absl::SimpleAtod(result->body.substr(at + kSeries.size(), end - at - kSeries.size()), &value)) return -1;
  return static_cast<int>(value);
}

fs::path DefaultBinDir() {
  std::error_code error;
  const fs::path self = fs::read_symlink("/proc/self/exe", error);
  return error ? fs::current_path() : self.parent_path();
}

absl::StatusOr<std::string> FindBinary(const fs::path& bin_dir, std::string_view name) {
  const fs::path path = bin_dir / name;
  if (::access(path.c_str(), X_OK) != 0) {
    return absl::NotFoundError(StrCat(path.string(),
                                      ": no such executable; build the daemons (make build, or ninja "
                                      "strata-scheduler strata-worker strata-kvstore) or pass --bin-dir"));
  }
  return path.string();
}

// Where the workers run: "cuda" with one CUDA_VISIBLE_DEVICES entry per worker, or "cpu" with one worker.
struct WorkerPlan {
  std::string backend;
  std::vector<std::string> devices;  // cuda: each worker's CUDA_VISIBLE_DEVICES; cpu: one empty entry
};

absl::StatusOr<WorkerPlan> PlanWorkers(ServeCommand::Backend backend) {
  std::string reason;
  const int gpus = backend == ServeCommand::Backend::kCpu ? 0 : engine::CudaDeviceCount(&reason);
  if (backend == ServeCommand::Backend::kCuda && gpus == 0) {
    return absl::FailedPreconditionError(StrCat("--backend cuda: no GPU to run on (", reason, ")"));
  }
  if (gpus == 0) {
    LogInfo(StrCat("event=serve_backend backend=cpu workers=1", backend == ServeCommand::Backend::kCpu
                                                                    ? " reason=\"--backend cpu\""
                                                                    : StrCat(" reason=\"no GPU: ", reason, "\"")));
    return WorkerPlan{"cpu", {""}};
  }
  // CUDA numbers the devices it sees from 0; a worker is given the one it runs on by the parent's name for
  // it, so that a CUDA_VISIBLE_DEVICES of ours (ids or UUIDs) still holds.
  std::vector<std::string> visible;
  if (const char* env = std::getenv("CUDA_VISIBLE_DEVICES"); env != nullptr && *env != '\0') {
    visible = absl::StrSplit(env, ',', absl::SkipEmpty());
  }
  WorkerPlan plan{"cuda", {}};
  for (int i = 0; i < gpus; ++i) {
    plan.devices.push_back(static_cast<size_t>(i) < visible.size() ? visible[i] : std::to_string(i));
  }
  LogInfo(StrCat("event=serve_backend backend=cuda workers=", gpus, " devices=", absl::StrJoin(plan.devices, ",")));
  return plan;
}

void Append(std::vector<std::string>& argv, std::initializer_list<std::string> args) {
  argv.insert(argv.end(), args.begin(), args.end());
}

std::string Loopback(int port) { return StrCat("127.0.0.1:", port); }

// Waits for a daemon's port file; returns its gRPC and metrics ports.
struct Ports {
  int grpc = 0;
  int metrics = 0;
};
absl::StatusOr<Ports> WaitForPorts(Supervisor& supervisor, const fs::path& file, const std::string& name,
                                   absl::Duration timeout) {
  std::map<std::string, int> ports;
  STRATA_RETURN_IF_ERROR(supervisor.WaitUntil(
      [&] {
        std::optional<std::map<std::string, int>> read = ReadPortFile(file);
        if (read.has_value()) ports = *std::move(read);
        return read.has_value();
      },
      timeout, StrCat(name, " listening")));
  if (ports["grpc_port"] <= 0 || ports["metrics_port"] <= 0) {
    return absl::InternalError(StrCat(file.string(), ": ", name, " wrote no grpc_port and metrics_port"));
  }
  return Ports{.grpc = ports["grpc_port"], .metrics = ports["metrics_port"]};
}

// What the children are started from: the command, the model, the binaries and the run directory.
struct Deployment {
  const ServeCommand& command;
  ResolvedModel model;
  std::string served_name;
  std::string scheduler_bin, worker_bin, kvstore_bin;  // kvstore_bin empty: no kvstore
  WorkerPlan plan;
  fs::path run_dir;

  fs::path PortFile(std::string_view name) const { return run_dir / StrCat(name, ".ports"); }
  fs::path ApiKeysFile() const { return run_dir / "api-keys"; }
  fs::path MacKeyFile() const { return run_dir / "kv-mac.key"; }
};

// The scheduler with the front door: everything else registers with it.
std::vector<std::string> SchedulerArgv(const Deployment& d) {
  const ServeCommand& c = d.command;
  std::vector<std::string> argv = {d.scheduler_bin,       "serve",
                                   "--grpc-address",      "127.0.0.1:0",
                                   "--metrics-host",      "127.0.0.1",
                                   "--metrics-port",      std::to_string(c.metrics_port),
                                   "--http-host",         c.host,
                                   "--http-port",         std::to_string(c.port),
                                   "--model-dir",         d.model.dir.string(),
                                   "--served-model-name", d.served_name,
                                   "--port-file",         d.PortFile("scheduler").string()};
  if (!c.api_key.empty()) Append(argv, {"--api-keys", d.ApiKeysFile().string()});
  if (!c.api_keys_file.empty()) Append(argv, {"--api-keys", c.api_keys_file});
  if (c.shared_prefix_cache) argv.push_back("--shared-prefix-cache");
  if (c.max_model_len > 0) Append(argv, {"--max-prompt-tokens", std::to_string(c.max_model_len)});
  argv.insert(argv.end(), c.scheduler_args.begin(), c.scheduler_args.end());
  return argv;
}

std::vector<std::string> KvstoreArgv(const Deployment& d, const std::string& scheduler_address) {
  const ServeCommand& c = d.command;
  std::vector<std::string> argv = {d.kvstore_bin,
                                   "--host",
                                   "127.0.0.1",
                                   "--port",
                                   "0",
                                   "--metrics-port",
                                   "0",
                                   "--port-file",
                                   d.PortFile("kvstore").string(),
                                   "--scheduler",
                                   scheduler_address,
                                   "--holder-id",
                                   "kvstore-0"};
  if (c.kvstore_dram_bytes > 0) Append(argv, {"--dram-bytes", std::to_string(c.kvstore_dram_bytes)});
  if (!c.kvstore_ssd_dir.empty()) {
    Append(argv, {"--ssd-dir", c.kvstore_ssd_dir.string(), "--ssd-bytes", std::to_string(c.kvstore_ssd_bytes)});
  }
  argv.insert(argv.end(), c.kvstore_args.begin(), c.kvstore_args.end());
  return argv;
}

// Worker `index` of the plan; on CUDA it sees only its own GPU.
ChildSpec WorkerSpec(const Deployment& d, size_t index, const std::string& scheduler_address,
                     const std::string& kvstore_address) {
  const ServeCommand& c = d.command;
  const std::string name = StrCat("worker-", index);
  std::vector<std::string> argv = {d.worker_bin,
                                   "--model",
                                   d.model.dir.string(),
                                   "--served-model-name",
                                   d.served_name,
                                   "--worker-id",
                                   name,
                                   "--backend",
                                   d.plan.backend,
                                   "--grpc-address",
                                   "127.0.0.1:0",
                                   "--metrics-host",
                                   "127.0.0.1",
                                   "--metrics-port",
                                   "0",
                                   "--port-file",
                                   d.PortFile(name).string(),
                                   "--scheduler",
                                   scheduler_address,
                                   "--block-tokens",
                                   std::to_string(c.block_tokens),
                                   "--kv-mac-key-file",
                                   d.MacKeyFile().string(),
                                   "--host-cache-bytes",
                                   std::to_string(c.host_cache_bytes),
                                   "--kv-pool-bytes",
                                   std::to_string(c.kv_pool_bytes)};
  if (d.plan.backend == "cuda") {
    Append(argv, {"--dtype", c.dtype, "--gpu-memory-fraction", StrCat(c.gpu_memory_fraction)});
  } else {
    Append(argv, {"--threads", std::to_string(c.threads)});
  }
  if (c.max_model_len > 0) Append(argv, {"--max-context-tokens", std::to_string(c.max_model_len)});
  if (!kvstore_address.empty()) Append(argv, {"--kvstore", kvstore_address});
  argv.insert(argv.end(), c.worker_args.begin(), c.worker_args.end());
  ChildSpec spec{.name = name, .argv = std::move(argv), .unset_env = c.unset_env, .set_env = {}};
  if (d.plan.backend == "cuda") spec.set_env.emplace_back("CUDA_VISIBLE_DEVICES", d.plan.devices[index]);
  return spec;
}

// Checks the command and finds everything it needs before any process starts.
absl::StatusOr<Deployment> Prepare(const ServeCommand& command) {
  if (command.port <= 0 || command.port > 65535) return absl::InvalidArgumentError("--port must be in [1, 65535]");
  if (command.api_key.find_first_of(" \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError("--api-key: no spaces or line breaks");
  }
  if (!command.api_key.empty() && !command.api_keys_file.empty()) {
    return absl::InvalidArgumentError("--api-key and --api-keys: give one");
  }
  STRATA_ASSIGN_OR_RETURN(ResolvedModel model, ResolveModel(command.model));
  Deployment d{.command = command, .model = std::move(model), .served_name = command.served_model_name};
  if (d.served_name.empty()) d.served_name = d.model.name;
  const fs::path bin_dir = command.bin_dir.empty() ? DefaultBinDir() : command.bin_dir;
  STRATA_ASSIGN_OR_RETURN(d.scheduler_bin, FindBinary(bin_dir, "strata-scheduler"));
  STRATA_ASSIGN_OR_RETURN(d.worker_bin, FindBinary(bin_dir, "strata-worker"));
  if (command.kvstore_dram_bytes > 0 || !command.kvstore_ssd_dir.empty()) {
    STRATA_ASSIGN_OR_RETURN(d.kvstore_bin, FindBinary(bin_dir, "strata-kvstore"));
    if (!command.kvstore_ssd_dir.empty()) {
      STRATA_RETURN_IF_ERROR(CreateDirectories(command.kvstore_ssd_dir, "--kvstore-ssd-dir"));
    }
  }
  STRATA_ASSIGN_OR_RETURN(d.plan, PlanWorkers(command.backend));
  return d;
}

}  // namespace

absl::Status RunServe(const ServeCommand& command) {
  STRATA_ASSIGN_OR_RETURN(Deployment d, Prepare(command));
  // The run directory is mkdtemp's (0700) and its secrets 0600; it outlives the supervisor, which stops the
  // children before it is removed.
  STRATA_ASSIGN_OR_RETURN(RunDir run, RunDir::Create());
  d.run_dir = run.path();
  if (!command.api_key.empty()) {
    STRATA_RETURN_IF_ERROR(WriteSecretFile(d.ApiKeysFile(), StrCat(command.api_key, " default\n")));
  }
  // One KV MAC secret for every worker, so that a block one wrote verifies on another.
  STRATA_ASSIGN_OR_RETURN(const std::string mac_secret, RandomHexSecret());
  STRATA_RETURN_IF_ERROR(WriteSecretFile(d.MacKeyFile(), mac_secret));
  const bool with_kvstore = !d.kvstore_bin.empty();
  LogInfo(StrCat("event=serve_starting model=", d.served_name, " dir=", d.model.dir.string(), " workers=",
                 d.plan.devices.size(), " backend=", d.plan.backend, " kvstore=", with_kvstore ? "on" : "off",
                 " url=http://", command.host, ":", command.port, "/v1 run_dir=", d.run_dir.string()));

  Supervisor supervisor;
  const absl::Duration kListenTimeout = absl::Seconds(60);
  STRATA_RETURN_IF_ERROR(supervisor.Start(
      ChildSpec{.name = "scheduler", .argv = SchedulerArgv(d), .unset_env = command.unset_env, .set_env = {}}));
  STRATA_ASSIGN_OR_RETURN(const Ports scheduler,
                          WaitForPorts(supervisor, d.PortFile("scheduler"), "scheduler", kListenTimeout));
  const std::string scheduler_address = Loopback(scheduler.grpc);
  std::string kvstore_address;
  if (with_kvstore) {
    STRATA_RETURN_IF_ERROR(supervisor.Start(ChildSpec{
        .name = "kvstore", .argv = KvstoreArgv(d, scheduler_address), .unset_env = command.unset_env, .set_env = {}}));
    STRATA_ASSIGN_OR_RETURN(const Ports kvstore,
                            WaitForPorts(supervisor, d.PortFile("kvstore"), "kvstore", kListenTimeout));
    kvstore_address = Loopback(kvstore.grpc);
  }
  // The workers load in parallel; ready once each serves and the scheduler has them all.
  const int workers = static_cast<int>(d.plan.devices.size());
  for (int i = 0; i < workers; ++i) {
    STRATA_RETURN_IF_ERROR(supervisor.Start(WorkerSpec(d, static_cast<size_t>(i), scheduler_address, kvstore_address)));
  }
  STRATA_RETURN_IF_ERROR(supervisor.WaitUntil(
      [&] {
        for (int i = 0; i < workers; ++i) {
          if (!ReadPortFile(d.PortFile(StrCat("worker-", i))).has_value()) return false;
        }
        return RegisteredWorkers(scheduler.metrics) >= workers;
      },
      absl::Seconds(command.start_timeout_s), StrCat(workers, " worker(s) serving and registered")));
  LogInfo(StrCat("event=serve_ready url=http://", command.host, ":", command.port, "/v1 model=", d.served_name,
                 " workers=", workers, " backend=", d.plan.backend, " kvstore=", with_kvstore ? kvstore_address : "off",
                 " metrics=http://127.0.0.1:", scheduler.metrics, "/metrics"));

  absl::StatusOr<int> stopped = supervisor.WaitForSignalOrExit();
  if (stopped.ok()) {
    LogInfo(StrCat("event=serve_stopping signal=", *stopped));
    supervisor.StopAll(absl::Seconds(command.stop_timeout_s));
    LogInfo("event=serve_stopped");
    return absl::OkStatus();
  }
  LogError(StrCat("error=child_exited message=\"", stopped.status().message(), "\""));
  supervisor.StopAll(absl::Seconds(command.stop_timeout_s));
  return absl::Status(stopped.status().code(), StrCat(stopped.status().message(), "; stopped the others"));
}

}  // namespace strata::cli
