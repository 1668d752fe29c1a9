#include "worker/cli/serve_command.h"

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
  {
    std::ofstream create(path);
    if (!create) return absl::UnavailableError(StrCat(path.string(), ": cannot create"));
  }
  if (::chmod(path.c_str(), S_IRUSR | S_IWUSR) != 0) {
    return absl::ErrnoToStatus(errno, StrCat(path.string(), ": cannot chmod 0600"));
  }
  std::ofstream out(path, std::ios::trunc);
  out << contents;
  out.close();
  if (!out) return absl::UnavailableError(StrCat(path.string(), ": cannot write"));
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
    return absl::NotFoundError(StrCat(path.string(), ": no such executable; build the daemons (make build, or ninja "
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
    LogInfo(StrCat("event=serve_backend backend=cpu workers=1",
                   backend == ServeCommand::Backend::kCpu ? " reason=\"--backend cpu\""
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

}  // namespace

absl::Status RunServe(const ServeCommand& command) {
  STRATA_ASSIGN_OR_RETURN(ResolvedModel model, ResolveModel(command.model));
  const std::string served_name = command.served_model_name.empty() ? model.name : command.served_model_name;
  if (command.port <= 0 || command.port > 65535) return absl::InvalidArgumentError("--port must be in [1, 65535]");
  if (command.api_key.find_first_of(" \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError("--api-key: no spaces or line breaks");
  }
  if (!command.api_key.empty() && !command.api_keys_file.empty()) {
    return absl::InvalidArgumentError("--api-key and --api-keys: give one");
  }
  const fs::path bin_dir = command.bin_dir.empty() ? DefaultBinDir() : command.bin_dir;
  STRATA_ASSIGN_OR_RETURN(const std::string scheduler_bin, FindBinary(bin_dir, "strata-scheduler"));
  STRATA_ASSIGN_OR_RETURN(const std::string worker_bin, FindBinary(bin_dir, "strata-worker"));
  const bool with_kvstore = command.kvstore_dram_bytes > 0 || !command.kvstore_ssd_dir.empty();
  std::string kvstore_bin;
  if (with_kvstore) {
    STRATA_ASSIGN_OR_RETURN(kvstore_bin, FindBinary(bin_dir, "strata-kvstore"));
    if (!command.kvstore_ssd_dir.empty()) {
      STRATA_RETURN_IF_ERROR(CreateDirectories(command.kvstore_ssd_dir, "--kvstore-ssd-dir"));
    }
  }
  STRATA_ASSIGN_OR_RETURN(const WorkerPlan plan, PlanWorkers(command.backend));
  STRATA_ASSIGN_OR_RETURN(RunDir run, RunDir::Create());
  LogInfo(StrCat("event=serve_starting model=", served_name, " dir=", model.dir.string(), " workers=",
                 plan.devices.size(), " backend=", plan.backend, " kvstore=", with_kvstore ? "on" : "off",
                 " url=http://", command.host, ":", command.port, "/v1 run_dir=", run.path().string()));

  Supervisor supervisor;
  const absl::Duration kListenTimeout = absl::Seconds(60);
  auto spec = [&](std::string name, std::vector<std::string> argv) {
    return ChildSpec{.name = std::move(name), .argv = std::move(argv), .unset_env = command.unset_env, .set_env = {}};
  };

  // The scheduler with the front door: everything else registers with it.
  std::vector<std::string> scheduler = {scheduler_bin, "serve", "--grpc-address", "127.0.0.1:0", "--metrics-host",
                                        "127.0.0.1", "--metrics-port", std::to_string(command.metrics_port),
                                        "--http-host", command.host, "--http-port", std::to_string(command.port),
                                        "--model-dir", model.dir.string(), "--served-model-name", served_name,
                                        "--port-file", (run.path() / "scheduler.ports").string()};
  if (!command.api_key.empty()) {
    STRATA_RETURN_IF_ERROR(WriteSecretFile(run.path() / "api-keys", StrCat(command.api_key, " default\n")));
    Append(scheduler, {"--api-keys", (run.path() / "api-keys").string()});
  } else if (!command.api_keys_file.empty()) {
    Append(scheduler, {"--api-keys", command.api_keys_file});
  }
  if (command.shared_prefix_cache) scheduler.push_back("--shared-prefix-cache");
  if (command.max_model_len > 0) Append(scheduler, {"--max-prompt-tokens", std::to_string(command.max_model_len)});
  scheduler.insert(scheduler.end(), command.scheduler_args.begin(), command.scheduler_args.end());
  STRATA_RETURN_IF_ERROR(supervisor.Start(spec("scheduler", std::move(scheduler))));
  STRATA_ASSIGN_OR_RETURN(const Ports scheduler_ports,
                          WaitForPorts(supervisor, run.path() / "scheduler.ports", "scheduler", kListenTimeout));
  const std::string scheduler_address = Loopback(scheduler_ports.grpc);

  std::string kvstore_address;
  if (with_kvstore) {
    std::vector<std::string> kvstore = {kvstore_bin, "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
                                        "--port-file", (run.path() / "kvstore.ports").string(), "--scheduler",
                                        scheduler_address, "--holder-id", "kvstore-0"};
    if (command.kvstore_dram_bytes > 0) Append(kvstore, {"--dram-bytes", std::to_string(command.kvstore_dram_bytes)});
    if (!command.kvstore_ssd_dir.empty()) {
      Append(kvstore, {"--ssd-dir", command.kvstore_ssd_dir.string(), "--ssd-bytes",
                       std::to_string(command.kvstore_ssd_bytes)});
    }
    kvstore.insert(kvstore.end(), command.kvstore_args.begin(), command.kvstore_args.end());
    STRATA_RETURN_IF_ERROR(supervisor.Start(spec("kvstore", std::move(kvstore))));
    STRATA_ASSIGN_OR_RETURN(const Ports kvstore_ports,
                            WaitForPorts(supervisor, run.path() / "kvstore.ports", "kvstore", kListenTimeout));
    kvstore_address = Loopback(kvstore_ports.grpc);
  }

  // The workers, one per GPU (or one on the CPU), loading in parallel. One KV MAC secret for all of them, so
  // that a block one wrote verifies on another.
  STRATA_ASSIGN_OR_RETURN(const std::string mac_secret, RandomHexSecret());
  STRATA_RETURN_IF_ERROR(WriteSecretFile(run.path() / "kv-mac.key", mac_secret));
  std::vector<fs::path> worker_port_files;
  for (size_t i = 0; i < plan.devices.size(); ++i) {
    const std::string name = StrCat("worker-", i);
    worker_port_files.push_back(run.path() / StrCat(name, ".ports"));
    std::vector<std::string> worker = {worker_bin, "--model", model.dir.string(), "--served-model-name", served_name,
                                       "--worker-id", name, "--backend", plan.backend, "--grpc-address", "127.0.0.1:0",
                                       "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--port-file",
                                       worker_port_files.back().string(), "--scheduler", scheduler_address,
                                       "--block-tokens", std::to_string(command.block_tokens),
                                       "--kv-mac-key-file", (run.path() / "kv-mac.key").string(),
                                       "--host-cache-bytes", std::to_string(command.host_cache_bytes),
                                       "--kv-pool-bytes", std::to_string(command.kv_pool_bytes)};
    if (plan.backend == "cuda") {
      Append(worker, {"--dtype", command.dtype, "--gpu-memory-fraction", StrCat(command.gpu_memory_fraction)});
    } else {
      Append(worker, {"--threads", std::to_string(command.threads)});
    }
    if (command.max_model_len > 0) Append(worker, {"--max-context-tokens", std::to_string(command.max_model_len)});
    if (!kvstore_address.empty()) Append(worker, {"--kvstore", kvstore_address});
    worker.insert(worker.end(), command.worker_args.begin(), command.worker_args.end());
    ChildSpec child = spec(name, std::move(worker));
    if (plan.backend == "cuda") child.set_env.emplace_back("CUDA_VISIBLE_DEVICES", plan.devices[i]);
    STRATA_RETURN_IF_ERROR(supervisor.Start(std::move(child)));
  }
  const int workers = static_cast<int>(plan.devices.size());
  STRATA_RETURN_IF_ERROR(supervisor.WaitUntil(
      [&] {
        for (const fs::path& file : worker_port_files) {
          if (!ReadPortFile(file).has_value()) return false;
        }
        return RegisteredWorkers(scheduler_ports.metrics) >= workers;
      },
      absl::Seconds(command.start_timeout_s), StrCat(workers, " worker(s) serving and registered")));
  LogInfo(StrCat("event=serve_ready url=http://", command.host, ":", command.port, "/v1 model=", served_name,
                 " workers=", workers, " backend=", plan.backend, " kvstore=", with_kvstore ? kvstore_address : "off",
                 " metrics=http://127.0.0.1:", scheduler_ports.metrics, "/metrics"));

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
