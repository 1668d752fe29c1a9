// A real process for tests: spawned from a built binary, killed if the test dies (PR_SET_PDEATHSIG) or
// forgets it, waited on with deadlines, its stdout and stderr captured or passed through.
#ifndef STRATA_TESTS_TESTING_CHILD_PROCESS_H_
#define STRATA_TESTS_TESTING_CHILD_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace strata::testing {

enum class ChildOutput {
  kCapture,  // out() and err() collect the streams (read while waiting); for short-lived commands
  kInherit,  // the child writes to the test's own streams; for daemons that log for a long time
};

// Not thread-safe. Move-only in effect (not copyable); owns the process until it has been reaped.
class ChildProcess {
 public:
  // Starts argv[0] with `argv` (argv[0] is a path, not searched in PATH). Crashes (STRATA_CHECK) when the
  // process cannot be created: that is a broken test environment, not a result.
  explicit ChildProcess(std::vector<std::string> argv, ChildOutput output = ChildOutput::kCapture);
  ~ChildProcess();  // SIGKILL and reap if still running
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool running() const { return !exit_code_.has_value(); }

  // Sends `signal` (nothing once the process has been reaped).
  void Signal(int signal);
  // Waits up to `timeout` for the exit, collecting captured output meanwhile. Returns the exit status,
  // 128 + the signal number for a process ended by a signal, or nullopt when it is still running.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  // SIGKILL and reap; returns what Wait() returns.
  int Kill();

  // With ChildOutput::kCapture: reads stderr until `needle` appears, the stream closes or `timeout`
  // passes; returns all of stderr read so far.
  const std::string& ReadStderrUntil(const std::string& needle, std::chrono::milliseconds timeout);
  const std::string& out() const { return stdout_; }
  const std::string& err() const { return stderr_; }

 private:
  void Drain();

  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  int stdout_fd_ = -1;
  int stderr_fd_ = -1;
  std::string stdout_;
  std::string stderr_;
};

// Polls `condition` (1 ms, then backing off to 50 ms) until it holds or `timeout` passes; returns
// whether it held.
bool WaitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

}  // namespace strata::testing

#endif  // STRATA_TESTS_TESTING_CHILD_PROCESS_H_
