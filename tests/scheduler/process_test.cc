// The real strata-scheduler binary as a process: it serves health and /metrics, drains on SIGTERM and
// exits 0; bad flags exit 1 with one line; `replay --json` prints one JSON object.
#include <fcntl.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "common/status.h"
#include "gtest/gtest.h"
#include "tests/scheduler/grpc_testing.h"

namespace {

// A child process with stdout and stderr captured. Killed in the destructor if still running.
class Child {
 public:
  explicit Child(std::vector<std::string> args) {
    int out[2], err[2];
    STRATA_CHECK(pipe(out) == 0 && pipe(err) == 0);
    pid_ = fork();
    STRATA_CHECK(pid_ >= 0);
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // a crashed test leaves no daemon behind
      dup2(out[1], 1);
      dup2(err[1], 2);
      close(out[0]);
      close(err[0]);
      std::vector<char*> argv;
      for (std::string& arg : args) argv.push_back(arg.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    close(err[1]);
    stdout_fd_ = out[0];
    stderr_fd_ = err[0];
  }
  ~Child() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(stdout_fd_);
    close(stderr_fd_);
  }

  // Reads stderr until `needle` appears or `timeout` passes; returns everything read so far.
  std::string ReadStderrUntil(const std::string& needle, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (stderr_.find(needle) == std::string::npos && absl::Now() < deadline) {
      pollfd fd{stderr_fd_, POLLIN, 0};
      if (poll(&fd, 1, 100) > 0) {
        char buffer[4096];
        const ssize_t n = read(stderr_fd_, buffer, sizeof(buffer));
        if (n <= 0) break;
        stderr_.append(buffer, static_cast<size_t>(n));
      }
    }
    return stderr_;
  }

  // Waits for the exit (at most `timeout`), draining both pipes; returns the exit code or -1.
  int Wait(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    int status = 0;
    while (absl::Now() < deadline) {
      Drain(stdout_fd_, stdout_);
      Drain(stderr_fd_, stderr_);
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        Drain(stdout_fd_, stdout_);
        Drain(stderr_fd_, stderr_);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      absl::SleepFor(absl::Milliseconds(20));  // polling a child's exit; the deadline bounds it
    }
    return -1;
  }

  pid_t pid() const { return pid_; }
  const std::string& out() const { return stdout_; }
  const std::string& err() const { return stderr_; }

 private:
  static void Drain(int fd, std::string& into) {
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 0) <= 0) return;
      char buffer[65536];
      const ssize_t n = read(fd, buffer, sizeof(buffer));
      if (n <= 0) return;
      into.append(buffer, static_cast<size_t>(n));
    }
  }

  pid_t pid_ = -1;
  bool exited_ = false;
  int stdout_fd_ = -1;
  int stderr_fd_ = -1;
  std::string stdout_;
  std::string stderr_;
};

int FieldAfter(const std::string& text, const std::string& key) {
  const size_t at = text.find(key);
  if (at == std::string::npos) return -1;
  return std::atoi(text.c_str() + at + key.size());
}

TEST(SchedulerProcess, ServesHealthAndMetricsAndDrainsOnSigterm) {
  Child child({STRATA_SCHEDULER_PATH, "serve", "--grpc-address", "127.0.0.1:0", "--metrics-host", "127.0.0.1",
               "--metrics-port", "0"});
  const std::string log = child.ReadStderrUntil("event=scheduler_started", absl::Seconds(20));
  const int grpc_port = FieldAfter(log, "grpc_port=");
  const int metrics_port = FieldAfter(log, "metrics_port=");
  ASSERT_GT(grpc_port, 0) << log;
  ASSERT_GT(metrics_port, 0) << log;

  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_port), grpc::InsecureChannelCredentials());
  EXPECT_EQ(strata::scheduler::testing::HealthStatus(channel), 1);
  httplib::Client http("127.0.0.1", metrics_port);
  auto health = http.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("strata_scheduler_index_blocks 0"), std::string::npos);

  ASSERT_EQ(kill(child.pid(), SIGTERM), 0);
  EXPECT_EQ(child.Wait(absl::Seconds(15)), 0) << child.err();
  EXPECT_NE(child.err().find("event=shutdown_signal signal=15"), std::string::npos) << child.err();
  EXPECT_NE(child.err().find("event=scheduler_stopped"), std::string::npos) << child.err();
}

TEST(SchedulerProcess, BadFlagsExitOneWithOneLine) {
  Child child({STRATA_SCHEDULER_PATH, "serve", "--policy", "random"});
  EXPECT_EQ(child.Wait(absl::Seconds(15)), 1);
  EXPECT_NE(child.err().find("unknown policy 'random'"), std::string::npos) << child.err();
  Child missing({STRATA_SCHEDULER_PATH, "replay", "--trace", "/nonexistent/trace.jsonl"});
  EXPECT_EQ(missing.Wait(absl::Seconds(15)), 1);
  EXPECT_NE(missing.err().find("/nonexistent/trace.jsonl: cannot open"), std::string::npos) << missing.err();
}

TEST(SchedulerProcess, ReplayJsonIsOneObjectWithTheTablesFields) {
  Child child({STRATA_SCHEDULER_PATH, "replay", "--trace",
               std::string(STRATA_TEST_DATA_DIR) + "/traces/mooncake_synthetic_trace.jsonl", "--max-requests",
               "300", "--json"});
  ASSERT_EQ(child.Wait(absl::Seconds(30)), 0) << child.err();
  const nlohmann::json json = nlohmann::json::parse(child.out(), nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << child.out();
  for (const char* policy : {"round-robin", "least-loaded", "cache-aware"}) {
    ASSERT_TRUE(json["policies"].contains(policy)) << policy;
    EXPECT_EQ(json["policies"][policy]["requests"], 300);
    EXPECT_TRUE(json["policies"][policy].contains("ttft_p90_s"));
    EXPECT_TRUE(json["policies"][policy].contains("hit_rate_kvstore_dram"));
  }
}

}  // namespace
