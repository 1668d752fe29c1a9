#include "common/flag_sources.h"

#include <cstdlib>
#include <fstream>

#include "common/config_file.h"
#include "common/size_flags.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/scratch_dir.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Sets environment variables for one test and restores them after.
class ScopedEnv {
 public:
  ~ScopedEnv() {
    for (const std::string& name : set_) ::unsetenv(name.c_str());
  }
  void Set(const std::string& name, const std::string& value) {
    ASSERT_EQ(std::getenv(name.c_str()), nullptr) << name << " is set in the test's environment";
    ::setenv(name.c_str(), value.c_str(), 1);
    set_.push_back(name);
  }

 private:
  std::vector<std::string> set_;
};

// A command with the kinds of flags the daemons have.
struct Command {
  CLI::App app{"test"};
  CLI::App* serve = app.add_subcommand("serve", "serve");
  std::string model;
  int port = 8000;
  uint64_t dram_bytes = 0;
  bool shared = false;
  std::vector<std::string> kvstores;
  std::unique_ptr<FlagSources> sources;

  Command() {
    serve->add_option("model", model, "model")->required();
    serve->add_option("--port", port, "port");
    serve->add_option("--kvstore-dram-bytes", dram_bytes, "bytes")->transform(ByteSizeFlag());
    serve->add_flag("--shared-prefix-cache", shared, "flag");
    serve->add_option("--kvstore", kvstores, "list");
    sources = std::make_unique<FlagSources>(*serve);
  }
  // The exit code Parse returned (-1: go on), with stderr captured.
  int Parse(std::vector<std::string> args, std::string* err = nullptr) {
    args.insert(args.begin(), {"strata", "serve"});
    std::vector<const char*> argv;
    for (const std::string& arg : args) argv.push_back(arg.c_str());
    ::testing::internal::CaptureStderr();
    std::optional<int> code = sources->Parse(app, static_cast<int>(argv.size()), argv.data());
    const std::string captured = ::testing::internal::GetCapturedStderr();
    if (err != nullptr) *err = captured;
    return code.value_or(-1);
  }
};

fs::path Write(const fs::path& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

TEST(FlagSources, FlagBeatsEnvironmentBeatsFileBeatsDefault) {
  testing::ScratchDir dir = testing::MakeTempDir("flags");
  const fs::path yaml = Write(dir.path() / "c.yaml",
                              "# the same keys as the flags\nport: 9001\nkvstore-dram-bytes: 2GiB\n"
                              "shared_prefix_cache: true\nkvstore: [a:1, b:2]\nmodel: from-file\n");
  {
    Command c;
    ASSERT_EQ(c.Parse({"--config", yaml.string()}), -1);
    EXPECT_EQ(c.model, "from-file");
    EXPECT_EQ(c.port, 9001);
    EXPECT_EQ(c.dram_bytes, 2ull << 30);
    EXPECT_TRUE(c.shared);
    EXPECT_THAT(c.kvstores, ElementsAre("a:1", "b:2"));
  }
  {
    ScopedEnv env;
    env.Set("STRATA_PORT", "9002");
    env.Set("STRATA_KVSTORE", "c:3,d:4");
    env.Set("STRATA_CONFIG", yaml.string());
    Command c;
    ASSERT_EQ(c.Parse({"m", "--kvstore-dram-bytes", "512MiB"}), -1);
    EXPECT_EQ(c.model, "m");                // the command line over the file
    EXPECT_EQ(c.port, 9002);                // the environment over the file
    EXPECT_EQ(c.dram_bytes, 512ull << 20);  // the command line over the file
    EXPECT_THAT(c.kvstores, ElementsAre("c:3", "d:4"));
    EXPECT_TRUE(c.shared);  // the file over the default

    Command flag_wins;
    ASSERT_EQ(flag_wins.Parse({"m", "--port", "9003"}), -1);
    EXPECT_EQ(flag_wins.port, 9003);  // the command line over the environment
  }
  Command defaults;
  ASSERT_EQ(defaults.Parse({"m"}), -1);
  EXPECT_EQ(defaults.port, 8000);
  EXPECT_FALSE(defaults.shared);
}

TEST(FlagSources, TomlFilesWorkTheSame) {
  testing::ScratchDir dir = testing::MakeTempDir("flags");
  const fs::path toml = Write(dir.path() / "c.toml",
                              "port = 9004\nkvstore-dram-bytes = \"1GiB\"\nshared-prefix-cache = true\n"
                              "kvstore = [\"a:1\", \"b:2\"]\n");
  Command c;
  ASSERT_EQ(c.Parse({"m", "--config", toml.string()}), -1);
  EXPECT_EQ(c.port, 9004);
  EXPECT_EQ(c.dram_bytes, 1ull << 30);
  EXPECT_TRUE(c.shared);
  EXPECT_THAT(c.kvstores, ElementsAre("a:1", "b:2"));
}

TEST(FlagSources, UnknownOrBadKeysAreErrorsNamingTheKey) {
  testing::ScratchDir dir = testing::MakeTempDir("flags");
  std::string err;
  Command unknown;
  EXPECT_EQ(unknown.Parse({"m", "--config", Write(dir.path() / "u.yaml", "port: 1\nprot: 2\n").string()}, &err), 2);
  EXPECT_THAT(err, HasSubstr("u.yaml:2: unknown key 'prot': no flag --prot in serve"));
  Command bad_size;
  EXPECT_EQ(bad_size.Parse({"m", "--config", Write(dir.path() / "b.yaml", "kvstore-dram-bytes: 2XB\n").string()}, &err),
            2);
  EXPECT_THAT(err, HasSubstr("key 'kvstore-dram-bytes'"));
  EXPECT_THAT(err, HasSubstr("unknown unit 'xb'"));
  Command nested;
  EXPECT_EQ(nested.Parse({"m", "--config", Write(dir.path() / "n.yaml", "port:\n  a: 1\n").string()}, &err), 2);
  EXPECT_THAT(err, HasSubstr("a nested mapping is not a flag value"));
  Command table;
  EXPECT_EQ(table.Parse({"m", "--config", Write(dir.path() / "t.toml", "[serve]\nport = 1\n").string()}, &err), 2);
  EXPECT_THAT(err, HasSubstr("tables ([serve]) are not used"));
  Command missing;
  EXPECT_EQ(missing.Parse({"m", "--config", (dir.path() / "none.yaml").string()}, &err), 2);
  EXPECT_THAT(err, HasSubstr("none.yaml: no such file"));
  Command required;
  EXPECT_EQ(required.Parse({}, &err), 2);
  EXPECT_THAT(err, HasSubstr("MODEL is required (on the command line, as STRATA_MODEL, or as `model:` in --config)"));
  {
    ScopedEnv env;
    env.Set("STRATA_PORT", "eighty");
    Command bad_env;
    EXPECT_EQ(bad_env.Parse({"m"}, &err), 2);
    EXPECT_THAT(err, HasSubstr("STRATA_PORT='eighty': "));
    Command flag_over_bad_env;
    EXPECT_EQ(flag_over_bad_env.Parse({"m", "--port", "1"}), -1) << "the command line is read first";
  }
  Command bad_flag;
  EXPECT_NE(bad_flag.Parse({"m", "--kvstore-dram-bytes", "-1"}, &err), -1);
  EXPECT_THAT(err, HasSubstr("'-1' is not a byte size"));
}

TEST(ConfigFile, ReadsScalarsAndListsWithLinesAndRefusesDuplicates) {
  testing::ScratchDir dir = testing::MakeTempDir("flags");
  absl::StatusOr<std::vector<ConfigEntry>> entries =
      ReadConfigFile(Write(dir.path() / "c.yml", "---\na: 'x y'\n\nb:\n  - 1\n  - 2\n"));
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].key, "a");
  EXPECT_THAT((*entries)[0].values, ElementsAre("x y"));
  EXPECT_EQ((*entries)[1].line, 4);
  EXPECT_THAT((*entries)[1].values, ElementsAre("1", "2"));
  EXPECT_TRUE(ReadConfigFile(Write(dir.path() / "empty.yaml", "# nothing\n"))->empty());
  EXPECT_THAT(ReadConfigFile(Write(dir.path() / "d.yaml", "port: 1\nport: 2\n")).status().message(),
              HasSubstr("key 'port' is given twice"));
  EXPECT_THAT(ReadConfigFile(Write(dir.path() / "s.yaml", "port: [1\n")).status().message(),
              HasSubstr("not valid YAML"));
  EXPECT_THAT(ReadConfigFile(Write(dir.path() / "x.json", "{}")).status().message(),
              HasSubstr("YAML (.yaml, .yml) or TOML"));
  EXPECT_THAT(ReadConfigFile(Write(dir.path() / "null.yaml", "port:\n")).status().message(), HasSubstr("no value"));
  EXPECT_THAT(ReadConfigFile(Write(dir.path() / "yaml.toml", "port: 1\n")).status().message(),
              HasSubstr("'port: 1' is not a TOML `key = value` line"));
}

}  // namespace
}  // namespace strata
