#include "tests/testing/netns_hosts.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "common/strings.h"
#include "tests/testing/child_process.h"

namespace strata::testing {
namespace {

constexpr char kPrefix[] = "strata-t";  // every namespace this harness makes; the sweep's key
constexpr char kNetnsDir[] = "/run/netns";
constexpr std::chrono::seconds kCommandTimeout{10};

// The first of `candidates` that can be executed, or "".
std::string FindTool(std::initializer_list<const char*> candidates) {
  for (const char* path : candidates) {
    if (access(path, X_OK) == 0) return path;
  }
  return "";
}

const std::string& IpPath() {
  static const std::string path = FindTool({"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"});
  return path;
}

const std::string& TcPath() {
  static const std::string path = FindTool({"/usr/sbin/tc", "/sbin/tc", "/usr/bin/tc", "/bin/tc"});
  return path;
}

// Runs a short command to its end; its stderr names what failed.
absl::Status Run(std::vector<std::string> argv) {
  ChildProcess process(argv, ChildOutput::kCapture);
  const std::optional<int> code = process.Wait(kCommandTimeout);
  if (!code.has_value()) {
    process.Kill();
    return absl::DeadlineExceededError(StrCat(absl::StrJoin(argv, " "), ": still running after ",
                                              kCommandTimeout.count(), " s"));
  }
  if (*code != 0) {
    std::string err = process.err();
    while (!err.empty() && err.back() == '\n') err.pop_back();
    return absl::InternalError(StrCat(absl::StrJoin(argv, " "), ": exit ", *code, ": ", err));
  }
  return absl::OkStatus();
}

absl::Status Ip(std::vector<std::string> args) {
  args.insert(args.begin(), IpPath());
  return Run(std::move(args));
}

ino_t NetnsInode(const char* path) {
  struct stat st {};
  return stat(path, &st) == 0 ? st.st_ino : 0;
}

// Deletes namespaces of this prefix whose creating process no longer exists (a crashed or killed run whose
// reaper did not finish). The pid is the digits after the prefix.
void SweepStale() {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(kNetnsDir, error)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(kPrefix, 0) != 0) continue;
    const pid_t pid = static_cast<pid_t>(std::atol(name.c_str() + std::strlen(kPrefix)));
    if (pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH)) (void)Ip({"netns", "del", name});
  }
}

std::vector<std::string> Words(std::string_view text) {
  return absl::StrSplit(absl::string_view(text.data(), text.size()), ' ', absl::SkipWhitespace());
}

}  // namespace

absl::Status EnterPrivateNetwork() {
  if (geteuid() != 0) return absl::FailedPreconditionError(StrCat("not root (euid ", geteuid(), ")"));
  if (IpPath().empty()) return absl::FailedPreconditionError("iproute2's `ip` is not installed");
  if (unshare(CLONE_NEWNET) != 0) {
    return absl::FailedPreconditionError(StrCat("unshare(CLONE_NEWNET): ", std::strerror(errno)));
  }
  return Ip({"link", "set", "dev", "lo", "up"});
}

std::string NetnsHosts::Unavailable() {
  if (geteuid() != 0) return StrCat("hosts in network namespaces need root (euid ", geteuid(), ")");
  if (IpPath().empty()) return "hosts in network namespaces need iproute2's `ip`, not installed";
  const ino_t self = NetnsInode("/proc/self/ns/net");
  if (self == 0 || self == NetnsInode("/proc/1/ns/net")) {
    return "this process is in the machine's network namespace (EnterPrivateNetwork() was not called from "
           "main, or failed: its error is at the top of the output)";
  }
  return "";
}

std::string NetnsHosts::Address(int host) { return StrCat("192.0.2.", host + 1); }

std::string NetnsHosts::BridgePort(int host) const { return StrCat("sv", run_, "h", host); }

absl::StatusOr<std::unique_ptr<NetnsHosts>> NetnsHosts::Create(int count) {
  if (const std::string reason = Unavailable(); !reason.empty()) return absl::FailedPreconditionError(reason);
  if (count < 1 || count > 200) return absl::InvalidArgumentError(StrCat("hosts: ", count, " is not in 1..200"));
  SweepStale();
  static int runs = 0;
  std::unique_ptr<NetnsHosts> hosts(new NetnsHosts());
  hosts->run_ = runs++;
  hosts->bridge_ = StrCat("sbr", hosts->run_);
  for (int i = 0; i < count; ++i) hosts->names_.push_back(StrCat(kPrefix, getpid(), "-", hosts->run_, "-h", i));
  STRATA_RETURN_IF_ERROR(hosts->Build(count));
  return hosts;
}

absl::Status NetnsHosts::Build(int count) {
  // The reaper first, so that a crash while the namespaces are made leaves none behind: `cat` returns at
  // EOF of the pipe, which comes when this process closes it or dies.
  std::string script = "cat >/dev/null";
  for (const std::string& name : names_) absl::StrAppend(&script, "; ", IpPath(), " netns del ", name, " 2>/dev/null");
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError(StrCat("pipe2: ", std::strerror(errno)));
  reaper_ = fork();
  if (reaper_ < 0) return absl::InternalError(StrCat("fork: ", std::strerror(errno)));
  if (reaper_ == 0) {
    setsid();  // out of the terminal's process group: a ctrl-C to the test does not end the reaper
    dup2(fds[0], STDIN_FILENO);
    execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[0]);
  reaper_pipe_ = fds[1];

  STRATA_RETURN_IF_ERROR(Ip({"link", "add", bridge_, "type", "bridge"}));
  STRATA_RETURN_IF_ERROR(Ip({"addr", "add", "192.0.2.254/24", "dev", bridge_}));
  STRATA_RETURN_IF_ERROR(Ip({"link", "set", "dev", bridge_, "up"}));
  for (int i = 0; i < count; ++i) {
    const std::string& ns = names_[static_cast<size_t>(i)];
    STRATA_RETURN_IF_ERROR(Ip({"netns", "add", ns}));
    STRATA_RETURN_IF_ERROR(Ip({"link", "add", BridgePort(i), "type", "veth", "peer", "name", "eth0", "netns", ns}));
    STRATA_RETURN_IF_ERROR(Ip({"link", "set", "dev", BridgePort(i), "master", bridge_, "up"}));
    STRATA_RETURN_IF_ERROR(Ip({"-n", ns, "addr", "add", StrCat(Address(i), "/24"), "dev", "eth0"}));
    STRATA_RETURN_IF_ERROR(Ip({"-n", ns, "link", "set", "dev", "eth0", "up"}));
    STRATA_RETURN_IF_ERROR(Ip({"-n", ns, "link", "set", "dev", "lo", "up"}));
  }
  return absl::OkStatus();
}

NetnsHosts::~NetnsHosts() {
  // Deleting a namespace deletes its end of the veth, and with it the bridge's end.
  for (const std::string& name : names_) (void)Ip({"netns", "del", name});
  (void)Ip({"link", "del", bridge_});
  if (reaper_pipe_ >= 0) close(reaper_pipe_);
  if (reaper_ > 0) {
    // The reaper finds nothing left to delete and exits at once.
    WaitFor([this] { return waitpid(reaper_, nullptr, WNOHANG) == reaper_; }, std::chrono::seconds(5));
  }
}

std::vector<std::string> NetnsHosts::Command(int host, const std::vector<std::string>& argv) const {
  std::vector<std::string> out = {IpPath(), "netns", "exec", Name(host)};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

absl::Status NetnsHosts::SetLink(int host, LinkState state) {
  return Ip({"link", "set", "dev", BridgePort(host), state == LinkState::kUp ? "up" : "down"});
}

absl::Status NetnsHosts::SetQdisc(int host, std::string_view discipline) {
  if (TcPath().empty()) return absl::FailedPreconditionError("iproute2's `tc` is not installed");
  const std::vector<std::string> on_host = {IpPath(), "netns", "exec", Name(host), TcPath()};
  const std::vector<std::string> on_bridge = {TcPath()};
  for (const auto& [prefix, device] : {std::pair{on_host, std::string("eth0")}, std::pair{on_bridge, BridgePort(host)}}) {
    std::vector<std::string> argv = prefix;
    if (discipline.empty()) {
      argv.insert(argv.end(), {"qdisc", "del", "dev", device, "root"});
      (void)Run(argv);  // nothing to delete is fine
      continue;
    }
    argv.insert(argv.end(), {"qdisc", "replace", "dev", device, "root"});
    for (std::string& word : Words(discipline)) argv.push_back(std::move(word));
    STRATA_RETURN_IF_ERROR(Run(argv));
  }
  return absl::OkStatus();
}

absl::Status NetnsHosts::QdiscSupported(std::string_view discipline) {
  if (TcPath().empty()) return absl::FailedPreconditionError("iproute2's `tc` is not installed");
  const std::vector<std::string> tc = {IpPath(), "netns", "exec", Name(0), TcPath(), "qdisc"};
  std::vector<std::string> add = tc;
  add.insert(add.end(), {"replace", "dev", "lo", "root"});
  for (std::string& word : Words(discipline)) add.push_back(std::move(word));
  absl::Status supported = Run(add);
  std::vector<std::string> del = tc;
  del.insert(del.end(), {"del", "dev", "lo", "root"});
  if (supported.ok()) (void)Run(del);
  return supported;
}

}  // namespace strata::testing
