// deploy/local-cluster.sh against the built daemons: up waits for health and the scheduler's holder
// list, status reports each process, up again changes nothing, a busy port and a missing binary are
// refused before anything starts, down stops everything.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "tests/cluster/local_cluster.h"
#include "tests/testing/child_process.h"
#include "tests/testing/scratch_dir.h"

namespace strata::cluster_testing {
namespace {

using strata::testing::ChildProcess;

const std::string kScript = std::string(STRATA_SOURCE_DIR) + "/deploy/local-cluster.sh";

bool PortFree(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  const bool free = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  close(fd);
  return free;
}

// The first of 7 consecutive free ports (a one-worker cluster uses base .. base+6).
int FreeBase() {
  for (int base = 20000 + static_cast<int>(getpid() % 2000) * 10; base < 60000; base += 10) {
    bool all = true;
    for (int p = base; p < base + 7 && all; ++p) all = PortFree(p);
    if (all) return base;
  }
  return 0;
}

struct ScriptRun {
  int status = -1;
  std::string out, err;
};

ScriptRun Script(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/bin/bash", kScript};
  argv.insert(argv.end(), args.begin(), args.end());
  ChildProcess child(argv);
  ScriptRun run;
  run.status = child.Wait(std::chrono::seconds(90)).value_or(-1);
  run.out = child.out();
  run.err = child.err();
  return run;
}

class LocalClusterScript : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string missing = LocalCluster::MissingBinaries();
    if (!missing.empty()) GTEST_SKIP() << missing << " (make build builds them)";
    setenv("BUILD_DIR", STRATA_BUILD_DIR, 1);
    base_ = FreeBase();
    ASSERT_GT(base_, 0);
  }
  void TearDown() override { Script({"down", "--run-dir", run_dir_.path().string()}); }

  std::vector<std::string> Flags() const {
    return {"--run-dir", run_dir_.path().string(), "--base-port", std::to_string(base_), "--workers", "1",
            "--model", LocalCluster::ModelDir()};
  }

  strata::testing::ScratchDir run_dir_ = strata::testing::MakeTempDir("strata-local-cluster");
  int base_ = 0;
};

TEST_F(LocalClusterScript, UpStatusUpAgainAndDown) {
  std::vector<std::string> up = {"up"};
  for (const std::string& flag : Flags()) up.push_back(flag);
  const ScriptRun started = Script(up);
  ASSERT_EQ(started.status, 0) << started.out << started.err;
  EXPECT_NE(started.out.find("local-cluster: up"), std::string::npos) << started.out;
  EXPECT_NE(started.out.find("scheduler lists: 1 worker(s), 1 kvstore(s)"), std::string::npos) << started.out;

  const ScriptRun status = Script({"status", "--run-dir", run_dir_.path().string()});
  EXPECT_EQ(status.status, 0) << status.out << status.err;
  for (const char* name : {"scheduler", "kvstore", "worker-0", "front door"}) {
    EXPECT_NE(status.out.find(name), std::string::npos) << name << "\n" << status.out;
  }
  EXPECT_EQ(status.out.find("UNHEALTHY"), std::string::npos) << status.out;

  const ScriptRun again = Script(up);
  EXPECT_EQ(again.status, 0) << again.out << again.err;
  EXPECT_NE(again.out.find("already up"), std::string::npos) << again.out;

  // A second cluster on the same ports is refused before it starts anything.
  strata::testing::ScratchDir other = strata::testing::MakeTempDir("strata-local-cluster");
  const ScriptRun clash = Script({"up", "--run-dir", other.path().string(), "--base-port", std::to_string(base_),
                            "--workers", "1"});
  EXPECT_EQ(clash.status, 1);
  EXPECT_NE(clash.err.find("is in use"), std::string::npos) << clash.err;

  const ScriptRun down = Script({"down", "--run-dir", run_dir_.path().string()});
  EXPECT_EQ(down.status, 0) << down.err;
  for (const char* name : {"scheduler", "kvstore", "worker-0"}) {
    EXPECT_NE(down.out.find(std::string("stopped ") + name), std::string::npos) << down.out;
  }
  EXPECT_EQ(Script({"status", "--run-dir", run_dir_.path().string()}).status, 1);
}

TEST_F(LocalClusterScript, AMissingBinarySaysMakeBuild) {
  setenv("BUILD_DIR", "/nonexistent-build", 1);
  std::vector<std::string> up = {"up"};
  for (const std::string& flag : Flags()) up.push_back(flag);
  const ScriptRun run = Script(up);
  EXPECT_EQ(run.status, 1);
  EXPECT_NE(run.err.find("/nonexistent-build/bin/strata-scheduler is missing: run `make build`"), std::string::npos)
      << run.err;
}

}  // namespace
}  // namespace strata::cluster_testing
