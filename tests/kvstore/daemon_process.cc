#include "tests/kvstore/daemon_process.h"

#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "common/strings.h"

namespace strata::kvstore::testing {
namespace {

uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

absl::StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::Start(std::vector<std::string> args) {
  std::unique_ptr<DaemonProcess> daemon(new DaemonProcess());
  const std::filesystem::path port_file = daemon->dir_.path() / "ports";
  // STRATA_KVSTORE_BINARY: another build's daemon (benchmarks compare two builds with one harness).
  const char* binary = std::getenv("STRATA_KVSTORE_BINARY");
  std::vector<std::string> argv_strings = {binary != nullptr ? binary : STRATA_KVSTORE_PATH,
                                           "--port",
                                           "0",
                                           "--metrics-port",
                                           "0",
                                           "--port-file",
                                           port_file.string()};
  // The whole suite can run with per-grant rkeys (tests/kvstore/CMakeLists.txt); a test that names a scope keeps it.
  const char* rkey_scope = std::getenv("STRATA_KVSTORE_TEST_RKEY_SCOPE");
  if (rkey_scope != nullptr && std::find(args.begin(), args.end(), "--rkey-scope") == args.end()) {
    argv_strings.insert(argv_strings.end(), {"--rkey-scope", rkey_scope});
  }
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  daemon->process_ =
      std::make_unique<strata::testing::ChildProcess>(std::move(argv_strings), strata::testing::ChildOutput::kInherit);
  bool exited = false;
  const bool ready = WaitFor(
      [&] {
        if (daemon->process_->Wait(std::chrono::milliseconds(0)).has_value()) {
          exited = true;
          return true;
        }
        std::ifstream in(port_file);
        std::string grpc, metrics;
        if (!(in >> grpc >> metrics)) return false;
        daemon->grpc_port_ = std::stoi(grpc.substr(grpc.find('=') + 1));
        daemon->metrics_port_ = std::stoi(metrics.substr(metrics.find('=') + 1));
        return true;
      },
      std::chrono::seconds(20));
  if (exited) {
    return absl::UnavailableError("strata-kvstore exited during start-up (see its stderr)");
  }
  if (!ready) return absl::DeadlineExceededError("strata-kvstore did not serve within 20 s");
  return daemon;
}

DaemonProcess::~DaemonProcess() = default;  // the ChildProcess kills a daemon still running

int DaemonProcess::Terminate() {
  process_->Signal(SIGTERM);
  // A daemon that does not drain within a minute is a failure, reported as SIGKILL's status.
  const std::optional<int> exit_code = process_->Wait(std::chrono::minutes(1));
  return exit_code ? *exit_code : process_->Kill();
}

void DaemonProcess::Kill() { process_->Kill(); }

absl::StatusOr<std::unique_ptr<KvStoreClient>> DaemonProcess::Connect(
    std::chrono::milliseconds transfer_timeout) const {
  ClientOptions options;
  options.address = address();
  options.transfer_timeout = transfer_timeout;
  // ctest runs the daemon suites once per mode; see tests/kvstore/CMakeLists.txt.
  const char* mode = std::getenv("STRATA_KVSTORE_TEST_PEER_FAILURE");
  if (mode != nullptr && std::string_view(mode) == "timeout") options.peer_failure = PeerFailure::kTimeoutOnly;
  return KvStoreClient::Connect(options);
}

BlockKey RandomKey(uint64_t seed) {
  uint64_t state = seed;
  BlockKey key;
  for (int i = 0; i < 2; ++i) {
    const uint64_t word = SplitMix(state);
    std::memcpy(key.bytes.data() + 8 * i, &word, 8);
  }
  return key;
}

uint64_t SizeForKey(const BlockKey& key, uint64_t min_bytes, uint64_t max_bytes) {
  return min_bytes + key.High64() % (max_bytes - min_bytes + 1);
}

void FillForKey(const BlockKey& key, uint8_t* data, uint64_t bytes) {
  uint64_t state = key.Low64() ^ bytes;
  uint64_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    const uint64_t word = SplitMix(state);
    std::memcpy(data + i, &word, 8);
  }
  const uint64_t word = SplitMix(state);
  std::memcpy(data + i, &word, bytes - i);
}

bool MatchesKey(const BlockKey& key, const uint8_t* data, uint64_t bytes) {
  uint64_t state = key.Low64() ^ bytes;
  uint64_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    const uint64_t word = SplitMix(state);
    if (std::memcmp(data + i, &word, 8) != 0) return false;
  }
  const uint64_t word = SplitMix(state);
  return std::memcmp(data + i, &word, bytes - i) == 0;
}

}  // namespace strata::kvstore::testing
