// `strata kv put|get|stat|del` against a strata-kvstore process on loopback.
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/kvstore/daemon_process.h"

namespace strata::kvstore::testing {
namespace {

using ::testing::HasSubstr;

struct CliRun {
  int exit_code = -1;
  std::string out, err;
};

std::string Slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class KvCli : public ::testing::Test {
 protected:
  void SetUp() override {
    auto daemon = DaemonProcess::Start({"--dram-bytes", std::to_string(64 << 20)});
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = std::move(*daemon);
  }

  CliRun Strata(const std::vector<std::string>& args) {
    const std::filesystem::path out = dir_.path() / "stdout", err = dir_.path() / "stderr";
    std::string command = std::string("'") + STRATA_CLI_PATH + "' kv --kvstore " + daemon_->address();
    for (const std::string& arg : args) command += " '" + arg + "'";
    command += " >'" + out.string() + "' 2>'" + err.string() + "' </dev/null";
    const int status = std::system(command.c_str());
    return CliRun{WIFEXITED(status) ? WEXITSTATUS(status) : -1, Slurp(out), Slurp(err)};
  }

  ScratchDir dir_ = MakeTempDir("strata-kv-cli-test");
  std::unique_ptr<DaemonProcess> daemon_;
};

constexpr char kKey[] = "00112233445566778899aabbccddeeff";

TEST_F(KvCli, PutGetStatDelRoundTripAFile) {
  const std::filesystem::path in = dir_.path() / "in.bin", out = dir_.path() / "out.bin";
  std::string bytes(3'000'001, '\0');
  std::mt19937 random(5);
  for (char& c : bytes) c = static_cast<char>(random());
  std::ofstream(in, std::ios::binary) << bytes;

  CliRun put = Strata({"put", "--key", kKey, in.string()});
  ASSERT_EQ(put.exit_code, 0) << put.err;
  EXPECT_THAT(put.out, HasSubstr("3000001 bytes stored"));
  EXPECT_THAT(Strata({"put", "--key", kKey, in.string()}).out, HasSubstr("already present"));

  CliRun get = Strata({"get", "--key", kKey, out.string()});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_THAT(get.out, HasSubstr("from dram"));
  EXPECT_EQ(Slurp(out), bytes);

  CliRun stat = Strata({"stat", "--json"});
  ASSERT_EQ(stat.exit_code, 0) << stat.err;
  const auto json = nlohmann::json::parse(stat.out);
  EXPECT_EQ(json.at("tiers").at(0).at("tier"), "dram");
  EXPECT_EQ(json.at("tiers").at(0).at("blocks"), 1);
  EXPECT_EQ(json.at("tiers").at(0).at("used_bytes"), 3000001);
  EXPECT_EQ(json.at("tiers").at(0).at("hit_rate"), 1.0);
  EXPECT_THAT(Strata({"stat", "--key", kKey}).out, HasSubstr(std::string(kKey) + " dram 3000001 bytes"));
  EXPECT_THAT(Strata({"stat"}).out, HasSubstr("hit_rate"));

  CliRun del = Strata({"del", "--key", kKey});
  ASSERT_EQ(del.exit_code, 0) << del.err;
  EXPECT_THAT(del.out, HasSubstr("1 of 1 blocks deleted"));
  CliRun missing = Strata({"get", "--key", kKey, out.string()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("is not in the kvstore"));
}

TEST_F(KvCli, BadKeysAndMissingFilesAreOneLineErrors) {
  CliRun bad_key = Strata({"put", "--key", "xyz", "/dev/null"});
  EXPECT_EQ(bad_key.exit_code, 1);
  EXPECT_THAT(bad_key.err, HasSubstr("32 hex digits"));
  CliRun no_file = Strata({"put", "--key", kKey, (dir_.path() / "nope").string()});
  EXPECT_EQ(no_file.exit_code, 1);
  EXPECT_THAT(no_file.err, HasSubstr("nope"));
}

}  // namespace
}  // namespace strata::kvstore::testing
