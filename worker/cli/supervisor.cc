#include "worker/cli/supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "absl/container/flat_hash_set.h"
#include "common/strings.h"

extern char** environ;

namespace strata::cli {
namespace {

sigset_t WatchedSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

// Writes all of `text` to `fd`, retrying on EINTR and short writes.
void WriteAll(int fd, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    text.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace

Supervisor::Supervisor() {
  sigset_t set = WatchedSignals();
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

Supervisor::~Supervisor() {
  StopAll(absl::Seconds(10));
  for (std::unique_ptr<Child>& child : children_) {
    if (child->log_thread.joinable()) child->log_thread.join();
  }
}

absl::Status Supervisor::Start(ChildSpec spec) {
  // Everything the child needs is made before fork: after it, only async-signal-safe calls.
  std::vector<char*> argv;
  for (std::string& arg : spec.argv) argv.push_back(arg.data());
  argv.push_back(nullptr);
  absl::flat_hash_set<std::string> dropped(spec.unset_env.begin(), spec.unset_env.end());
  for (const auto& [name, value] : spec.set_env) dropped.insert(name);
  std::vector<std::string> env_strings;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view text(*entry);
    if (!dropped.contains(std::string(text.substr(0, text.find('='))))) env_strings.emplace_back(text);
  }
  for (const auto& [name, value] : spec.set_env) env_strings.push_back(StrCat(name, "=", value));
  std::vector<char*> envp;
  for (std::string& entry : env_strings) envp.push_back(entry.data());
  envp.push_back(nullptr);
  const std::string exec_failed = StrCat("cannot execute ", spec.argv.front(), ": ");

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, StrCat(spec.name, ": cannot make a pipe"));
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int error = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return absl::ErrnoToStatus(error, StrCat(spec.name, ": cannot fork"));
  }
  if (pid == 0) {
    // Own process group: a terminal's Ctrl-C reaches `strata serve` alone, which stops the children in order.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);  // the parent died before prctl took effect
    const int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, STDIN_FILENO);
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(argv[0], argv.data(), envp.data());
    const char* reason = std::strerror(errno);
    WriteAll(STDERR_FILENO, exec_failed);
    WriteAll(STDERR_FILENO, reason);
    WriteAll(STDERR_FILENO, "\n");
    ::_exit(127);
  }
  ::close(fds[1]);
  auto child = std::make_unique<Child>();
  child->name = spec.name;
  child->pid = pid;
  child->log_thread = std::thread(&Supervisor::CopyLines, this, fds[0], StrCat("[", spec.name, "] "));
  children_.push_back(std::move(child));
  return absl::OkStatus();
}

void Supervisor::CopyLines(int fd, std::string prefix) {
  std::string pending;
  char buffer[4096];
  auto flush_line = [&](std::string_view line) {
    absl::MutexLock lock(&stderr_mutex_);
    WriteAll(STDERR_FILENO, StrCat(prefix, line, "\n"));
  };
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buffer, static_cast<size_t>(n));
    size_t start = 0;
    for (size_t end; (end = pending.find('\n', start)) != std::string::npos; start = end + 1) {
      flush_line(std::string_view(pending).substr(start, end - start));
    }
    pending.erase(0, start);
  }
  if (!pending.empty()) flush_line(pending);
  ::close(fd);
}

std::string Supervisor::DescribeExit(const Child& child) {
  if (WIFEXITED(child.exit_status)) return StrCat("exited with status ", WEXITSTATUS(child.exit_status));
  if (WIFSIGNALED(child.exit_status)) {
    const int signal_number = WTERMSIG(child.exit_status);
    return StrCat("was killed by signal ", signal_number, " (", strsignal(signal_number), ")");
  }
  return "stopped";
}

absl::Status Supervisor::ReapExited() {
  absl::Status first = absl::OkStatus();
  for (std::unique_ptr<Child>& child : children_) {
    if (!child->running) continue;
    int status = 0;
    const pid_t reaped = ::waitpid(child->pid, &status, WNOHANG);
    if (reaped != child->pid) continue;
    child->running = false;
    child->exit_status = status;
    if (first.ok()) {
      first = absl::FailedPreconditionError(StrCat(child->name, " (pid ", child->pid, ") ", DescribeExit(*child),
                                                   "; its log is above, prefixed [", child->name, "]"));
    }
  }
  return first;
}

int Supervisor::WaitEvent(absl::Duration timeout) {
  const sigset_t set = WatchedSignals();
  const timespec wait = absl::ToTimespec(timeout);
  const int signal_number = ::sigtimedwait(&set, nullptr, &wait);
  return signal_number < 0 ? 0 : signal_number;
}

absl::Status Supervisor::WaitUntil(const std::function<bool()>& ready, absl::Duration timeout,
                                   const std::string& what) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (absl::Status exited = ReapExited(); !exited.ok()) return exited;
    if (ready()) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(StrCat("no ", what, " within ", absl::FormatDuration(timeout)));
    }
    const int signal_number = WaitEvent(absl::Milliseconds(50));
    if (signal_number == SIGINT || signal_number == SIGTERM) {
      return absl::CancelledError(
          StrCat("stopped by signal ", signal_number, " (", strsignal(signal_number), ") while waiting for ", what));
    }
  }
}

absl::StatusOr<int> Supervisor::WaitForSignalOrExit() {
  for (;;) {
    if (absl::Status exited = ReapExited(); !exited.ok()) return exited;
    const int signal_number = WaitEvent(absl::Seconds(1));
    if (signal_number == SIGINT || signal_number == SIGTERM) return signal_number;
  }
}

void Supervisor::StopAll(absl::Duration grace) {
  for (std::unique_ptr<Child>& child : children_) {
    if (child->running) ::kill(child->pid, SIGTERM);
  }
  const absl::Time deadline = absl::Now() + grace;
  bool kill_now = false;
  for (;;) {
    (void)ReapExited();
    bool any = false;
    for (const std::unique_ptr<Child>& child : children_) any = any || child->running;
    if (!any) return;
    if (kill_now || absl::Now() >= deadline) break;
    // A second SIGINT or SIGTERM while the children drain: stop waiting for them.
    const int signal_number = WaitEvent(absl::Milliseconds(50));
    kill_now = signal_number == SIGINT || signal_number == SIGTERM;
  }
  for (std::unique_ptr<Child>& child : children_) {
    if (!child->running) continue;
    ::kill(child->pid, SIGKILL);
    ::waitpid(child->pid, &child->exit_status, 0);
    child->running = false;
  }
}

}  // namespace strata::cli
