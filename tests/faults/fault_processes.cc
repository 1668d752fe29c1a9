#include "tests/faults/fault_processes.h"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/strings.h"

namespace strata::faults {
namespace {

using strata::testing::ChildOutput;
using strata::testing::ChildProcess;
using strata::testing::WaitFor;

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

uint64_t RssOf(const std::string& status_path) {
  std::ifstream in(status_path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;  // "VmRSS:   1234 kB"
  }
  return 0;
}

}  // namespace

std::string ModelDir() { return std::string(STRATA_TEST_DATA_DIR) + "/models/llama3-tiny"; }

std::string MissingBinaries() {
  std::string missing;
  for (const char* path : {STRATA_SCHEDULER_PATH, STRATA_KVSTORE_PATH, STRATA_WORKER_PATH}) {
    if (access(path, X_OK) != 0) absl::StrAppend(&missing, missing.empty() ? "" : ", ", path);
  }
  return missing.empty() ? "" : StrCat("not built: ", missing);
}

bool SanitizerBuild() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  return true;
#else
  return false;
#endif
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(Spec spec, std::chrono::seconds timeout) {
  std::unique_ptr<Daemon> daemon(new Daemon());
  std::vector<std::string> argv;
  if (!spec.env.empty()) {
    argv.push_back("/usr/bin/env");
    argv.insert(argv.end(), spec.env.begin(), spec.env.end());
  }
  argv.insert(argv.end(), spec.argv.begin(), spec.argv.end());
  if (!spec.port_file.empty()) {
    std::filesystem::remove(spec.port_file);
    argv.push_back("--port-file");
    argv.push_back(spec.port_file.string());
  }
  daemon->metrics_port_ = spec.metrics_port;
  daemon->process_ = std::make_unique<ChildProcess>(std::move(argv), ChildOutput::kInherit);
  bool exited = false;
  Daemon* raw = daemon.get();
  const bool ready = WaitFor(
      [&] {
        if (raw->process_->Wait(std::chrono::milliseconds(0)).has_value()) {
          exited = true;
          return true;
        }
        if (!spec.port_file.empty() && !ReadPortFile(spec.port_file, raw->grpc_port_, raw->metrics_port_)) {
          return false;
        }
        return Healthy(raw->metrics_port_);
      },
      timeout);
  if (exited) return absl::UnavailableError(StrCat(spec.name, " exited during start-up (its log is above)"));
  if (!ready) return absl::DeadlineExceededError(StrCat(spec.name, " not serving after ", timeout.count(), " s"));
  return daemon;
}

Daemon::~Daemon() = default;  // the ChildProcess kills a daemon still running

int Daemon::Terminate(std::chrono::milliseconds timeout) {
  process_->Signal(SIGTERM);
  const std::optional<int> code = process_->Wait(timeout);
  return code ? *code : process_->Kill();
}

uint64_t Daemon::RssBytes() const {
  return process_->running() ? RssOf(StrCat("/proc/", process_->pid(), "/status")) : 0;
}

absl::StatusOr<std::unique_ptr<Daemon>> StartKvstore(int port, const std::filesystem::path& port_file,
                                                     std::vector<std::string> args, std::vector<std::string> env) {
  Daemon::Spec spec{.name = "strata-kvstore",
                    .argv = {STRATA_KVSTORE_PATH, "--host", "127.0.0.1", "--port", std::to_string(port),
                             "--metrics-port", "0"},
                    .env = std::move(env),
                    .port_file = port_file};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  return Daemon::Start(std::move(spec));
}

absl::StatusOr<std::unique_ptr<Daemon>> StartWorker(const std::filesystem::path& port_file,
                                                    std::vector<std::string> args) {
  setenv("OMP_WAIT_POLICY", "passive", 1);  // several daemons on 2 cores: idle OpenMP threads must sleep
  Daemon::Spec spec{.name = "strata-worker",
                    .argv = {STRATA_WORKER_PATH, "--model", ModelDir(), "--grpc-address", "127.0.0.1:0",
                             "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--block-tokens", "16",
                             "--threads", "1", "--served-model-name", "llama3-tiny",
                             // the cluster's KV MAC secret: one worker's kvstore blocks verify on another
                             "--kv-mac-key-file", STRATA_TEST_DATA_DIR "/kv_mac.key"},
                    .port_file = port_file};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  return Daemon::Start(std::move(spec));
}

void SetIoFault(const std::filesystem::path& control, const std::string& line) {
  const std::filesystem::path temp = control.string() + ".new";
  std::ofstream(temp) << line << "\n";
  std::filesystem::rename(temp, control);
}

uint64_t SelfRssBytes() { return RssOf("/proc/self/status"); }

int SelfOpenFds() {
  int count = 0;
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (readdir(dir) != nullptr) ++count;
    closedir(dir);
  }
  return count - 3;  // ".", ".." and the directory's own descriptor
}

}  // namespace strata::faults
