#include "tests/testing/child_process.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "common/status.h"

namespace strata::testing {
namespace {

// Appends what `fd` has now, without blocking; false once the stream has closed.
bool ReadAvailable(int fd, std::string& into) {
  for (;;) {
    pollfd ready{fd, POLLIN, 0};
    if (poll(&ready, 1, 0) <= 0) return true;
    char buffer[65536];
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) return false;
    into.append(buffer, static_cast<size_t>(n));
  }
}

}  // namespace

ChildProcess::ChildProcess(std::vector<std::string> argv, ChildOutput output) {
  STRATA_CHECK(!argv.empty());
  int out[2] = {-1, -1}, err[2] = {-1, -1};
  const bool capture = output == ChildOutput::kCapture;
  if (capture) STRATA_CHECK(pipe(out) == 0 && pipe(err) == 0);
  const pid_t parent = getpid();
  pid_ = fork();
  STRATA_CHECK(pid_ >= 0);
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // a crashed test leaves no process behind
    if (getppid() != parent) _exit(127);  // the test died before prctl took effect
    if (capture) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err[1], STDERR_FILENO);
      close(out[0]);
      close(err[0]);
    }
    std::vector<char*> args;
    for (std::string& arg : argv) args.push_back(arg.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  if (capture) {
    close(out[1]);
    close(err[1]);
    stdout_fd_ = out[0];
    stderr_fd_ = err[0];
  }
}

ChildProcess::~ChildProcess() {
  if (running()) Kill();
  if (stdout_fd_ >= 0) close(stdout_fd_);
  if (stderr_fd_ >= 0) close(stderr_fd_);
}

void ChildProcess::Signal(int signal) {
  if (running()) kill(pid_, signal);
}

void ChildProcess::Drain() {
  if (stdout_fd_ >= 0) ReadAvailable(stdout_fd_, stdout_);
  if (stderr_fd_ >= 0) ReadAvailable(stderr_fd_, stderr_);
}

std::optional<int> ChildProcess::Wait(std::chrono::milliseconds timeout) {
  WaitFor(
      [&] {
        Drain();
        if (!running()) return true;
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        Drain();
        return true;
      },
      timeout);
  return exit_code_;
}

int ChildProcess::Kill() {
  if (running()) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    Drain();
  }
  return *exit_code_;
}

const std::string& ChildProcess::ReadStderrUntil(const std::string& needle, std::chrono::milliseconds timeout) {
  if (stderr_fd_ < 0) return stderr_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (stderr_.find(needle) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd ready{stderr_fd_, POLLIN, 0};
    if (poll(&ready, 1, 100) > 0 && !ReadAvailable(stderr_fd_, stderr_)) break;
  }
  return stderr_;
}

bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(pause);  // polling interval, not a wait for an event
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

}  // namespace strata::testing
