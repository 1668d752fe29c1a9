// The child daemons of `strata serve`: started from their binaries in process groups of their own, their
// output copied line by line onto this process's stderr behind a `[name] ` prefix, watched for death, and
// stopped together.
#ifndef STRATA_WORKER_CLI_SUPERVISOR_H_
#define STRATA_WORKER_CLI_SUPERVISOR_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace strata::cli {

struct ChildSpec {
  std::string name;               // the log prefix and the name in messages: "scheduler", "worker-0"
  std::vector<std::string> argv;  // argv[0] is the binary's path
  // The environment: this process's, less `unset_env`, plus `set_env`.
  std::vector<std::string> unset_env;
  std::vector<std::pair<std::string, std::string>> set_env;
};

// Not thread-safe: one thread (main) starts, waits and stops. The constructor blocks SIGCHLD, SIGINT and
// SIGTERM in the calling thread (call it in main before any thread starts, as BlockShutdownSignals), so
// that waits return on a child's exit or a shutdown signal.
class Supervisor {
 public:
  Supervisor();
  ~Supervisor();  // StopAll(10 s) when children still run; joins the log threads
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Forks and executes `spec`. The child dies with SIGTERM when this process dies (PR_SET_PDEATHSIG).
  // Unavailable when the process cannot be created; the binary failing to execute shows as the child's exit.
  absl::Status Start(ChildSpec spec);

  // Waits until `ready()` (polled every 50 ms) holds. FailedPrecondition naming the child and its exit
  // status when a child exits first, Cancelled when SIGINT or SIGTERM arrives first, DeadlineExceeded
  // naming `what` after `timeout`.
  absl::Status WaitUntil(const std::function<bool()>& ready, absl::Duration timeout, const std::string& what);

  // Waits for a shutdown signal (returns its number) or a child's exit (FailedPrecondition naming it).
  absl::StatusOr<int> WaitForSignalOrExit();

  // SIGTERM to every running child, then SIGKILL to those still running after `grace`; reaps them all.
  void StopAll(absl::Duration grace);

 private:
  struct Child {
    std::string name;
    pid_t pid = -1;
    bool running = true;
    int exit_status = 0;  // as waitpid reports it
    std::thread log_thread;
  };

  // Reaps children that exited; the first one found that was running is returned as an error.
  absl::Status ReapExited();
  // Waits for one event (a signal or SIGCHLD) for up to `timeout`: >0 signal number, 0 timeout.
  int WaitEvent(absl::Duration timeout);
  static std::string DescribeExit(const Child& child);
  void CopyLines(int fd, std::string prefix);

  std::vector<std::unique_ptr<Child>> children_;
  absl::Mutex stderr_mutex_;  // one child's line at a time on stderr
};

}  // namespace strata::cli

#endif  // STRATA_WORKER_CLI_SUPERVISOR_H_
