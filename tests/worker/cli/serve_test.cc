// `strata serve` as a real process: the scheduler, front door and a CPU worker as its children, on the tiny
// Llama of tests/data; flags from the command line, STRATA_* variables and a config file; a model id from a
// Hugging Face cache laid out in a scratch directory.
#include <dirent.h>
#include <httplib.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/child_process.h"
#include "tests/testing/golden.h"
#include "tests/testing/loopback.h"
#include "tests/testing/scratch_dir.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using testing::ChildOutput;
using testing::ChildProcess;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kModel = (testing::TestDataDir() / "models" / "llama3-tiny").string();

// `strata serve ARGS` under `env` (NAME=VALUE each), its output captured: read while waiting for it.
std::unique_ptr<ChildProcess> Serve(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
  std::vector<std::string> argv = {"/usr/bin/env"};
  argv.insert(argv.end(), env.begin(), env.end());
  argv.insert(argv.end(), {STRATA_CLI_PATH, "serve"});
  argv.insert(argv.end(), args.begin(), args.end());
  return std::make_unique<ChildProcess>(argv, ChildOutput::kCapture);
}

// Small and quick on the 2-core CI machine.
std::vector<std::string> QuickFlags() {
  return {"--threads", "1", "--host-cache-bytes", "16MiB", "--stop-timeout-s", "10"};
}

// `Authorization: Bearer key`, or nothing without a key.
httplib::Headers Auth(const std::string& key) {
  return key.empty() ? httplib::Headers{} : httplib::Headers{{"Authorization", "Bearer " + key}};
}

// Waits for the deployment's ready line, then checks /health and the model list.
void WaitReady(ChildProcess& serve, int port, const std::string& model_name, const std::string& key = "") {
  const std::string& log = serve.ReadStderrUntil("event=serve_ready", std::chrono::seconds(90));
  ASSERT_THAT(log, HasSubstr("event=serve_ready")) << log;
  httplib::Client http("127.0.0.1", port);
  httplib::Result health = http.Get("/health");
  ASSERT_TRUE(health) << "no answer on port " << port;
  EXPECT_EQ(health->status, 200);
  httplib::Result models = http.Get("/v1/models", Auth(key));
  ASSERT_TRUE(models && models->status == 200);
  const Json list = Json::parse(models->body);
  EXPECT_EQ(list["data"][0]["id"], model_name) << models->body;
  EXPECT_EQ(list["data"][0]["workers"], 1) << models->body;
}

// A streamed chat completion: content deltas arrive as server-sent events, then [DONE].
void ExpectStreamedChat(int port, const std::string& model_name, const std::string& key = "") {
  httplib::Client http("127.0.0.1", port);
  http.set_read_timeout(60, 0);
  const Json request = {{"model", model_name}, {"messages", {{{"role", "user"}, {"content", "Say something."}}}},
                        {"max_tokens", 8},     {"temperature", 0},
                        {"ignore_eos", true},  {"stream", true}};
  std::vector<std::string> events;
  httplib::Result result = http.Post("/v1/chat/completions", Auth(key), request.dump(), "application/json");
  ASSERT_TRUE(result) << "no answer";
  ASSERT_EQ(result->status, 200) << result->body;
  EXPECT_EQ(result->get_header_value("Content-Type"), "text/event-stream");
  std::istringstream lines(result->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("data: ", 0) == 0) events.push_back(line.substr(6));
  }
  ASSERT_GE(events.size(), 3u) << result->body;
  EXPECT_EQ(events.back(), "[DONE]");
  int content_chunks = 0;
  std::string finish_reason;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const Json chunk = Json::parse(events[i]);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    if (chunk["choices"].empty()) continue;
    const Json& delta = chunk["choices"][0]["delta"];
    if (delta.contains("content") && delta["content"].is_string() && !delta["content"].get<std::string>().empty()) {
      ++content_chunks;
    }
    if (!chunk["choices"][0]["finish_reason"].is_null()) finish_reason = chunk["choices"][0]["finish_reason"];
  }
  EXPECT_GE(content_chunks, 2) << result->body;
  EXPECT_EQ(finish_reason, "length");
}

void StopWithSigterm(ChildProcess& serve, int port) {
  serve.Signal(SIGTERM);
  const std::optional<int> code = serve.Wait(std::chrono::seconds(30));
  ASSERT_TRUE(code.has_value()) << "strata serve did not stop";
  EXPECT_EQ(*code, 0) << serve.err();
  EXPECT_THAT(serve.err(), HasSubstr("event=serve_stopped"));
  httplib::Client http("127.0.0.1", port);
  EXPECT_FALSE(http.Get("/health")) << "the front door still answers after strata serve stopped";
}

TEST(StrataServe, ServesAStreamedChatCompletionAndStopsOnSigterm) {
  const int port = testing::FreePort();
  std::vector<std::string> args = {kModel, "--port", std::to_string(port)};
  for (const std::string& flag : QuickFlags()) args.push_back(flag);
  std::unique_ptr<ChildProcess> serve = Serve(args);
  WaitReady(*serve, port, "llama3-tiny");
  EXPECT_THAT(serve->err(), HasSubstr("event=serve_backend backend=cpu workers=1"));
  // The children's logs come through prefixed; the worker says what it read and measured.
  EXPECT_THAT(serve->err(), HasSubstr("[scheduler] "));
  EXPECT_THAT(serve->err(), HasSubstr("[worker-0] "));
  EXPECT_THAT(serve->err(), HasSubstr("event=model_open bytes="));
  EXPECT_THAT(serve->err(), HasSubstr("event=model_load backend=cpu bytes="));
  EXPECT_THAT(serve->err(), HasSubstr("event=calibration prefill_tokens="));
  ExpectStreamedChat(port, "llama3-tiny");
  StopWithSigterm(*serve, port);
}

TEST(StrataServe, TakesFlagsFromAConfigFileWithTheEnvironmentOverIt) {
  testing::ScratchDir dir = testing::MakeTempDir("serve");
  const int port = testing::FreePort();
  const fs::path config = dir.path() / "serve.yaml";
  std::ofstream(config) << "# strata serve --config\nmodel: " << kModel << "\nport: " << port
                        << "\nthreads: 1\nhost-cache-bytes: 16MiB\nstop_timeout_s: 10\n"
                        << "served-model-name: from-file\nkvstore-dram-bytes: 64MiB\n"
                        << "kvstore-ssd-dir: " << (dir.path() / "made" / "by" / "serve").string() << "\n"
                        << "worker-arg: [--prefill-chunk-tokens=64, --max-running-requests=4]\n"
                        << "scheduler-arg: --policy=least-loaded\n";
  std::unique_ptr<ChildProcess> serve = Serve({"--config", config.string()}, {"STRATA_SERVED_MODEL_NAME=from-env"});
  WaitReady(*serve, port, "from-env");
  EXPECT_TRUE(fs::is_directory(dir.path() / "made" / "by" / "serve")) << "--kvstore-ssd-dir was not created";
  EXPECT_THAT(serve->err(), HasSubstr("[kvstore] "));
  EXPECT_THAT(serve->err(), HasSubstr("policy=least-loaded")) << "--scheduler-arg did not reach the scheduler";
  ExpectStreamedChat(port, "from-env");
  StopWithSigterm(*serve, port);
}

TEST(StrataServe, ResolvesAModelIdInTheLocalHuggingFaceCacheAndTakesAnApiKey) {
  testing::ScratchDir dir = testing::MakeTempDir("serve");
  const fs::path repo = dir.path() / "hub" / "models--strata-test--llama3-tiny";
  fs::create_directories(repo / "snapshots");
  fs::create_directories(repo / "refs");
  fs::create_symlink(fs::absolute(kModel), repo / "snapshots" / "0123abcd");
  std::ofstream(repo / "refs" / "main") << "0123abcd";
  const int port = testing::FreePort();
  std::vector<std::string> args = {"strata-test/llama3-tiny", "--port", std::to_string(port)};
  for (const std::string& flag : QuickFlags()) args.push_back(flag);
  // vLLM's --api-key, here from the environment: requests without it are 401.
  std::unique_ptr<ChildProcess> serve =
      Serve(args, {"HF_HOME=" + dir.path().string(), "HF_HUB_CACHE=", "STRATA_API_KEY=sk-serve-test"});
  WaitReady(*serve, port, "strata-test/llama3-tiny", "sk-serve-test");
  httplib::Client http("127.0.0.1", port);
  httplib::Result keyless = http.Get("/v1/models");
  ASSERT_TRUE(keyless);
  EXPECT_EQ(keyless->status, 401);
  EXPECT_THAT(serve->err(), Not(HasSubstr("sk-serve-test"))) << "the key was logged";
  ExpectStreamedChat(port, "strata-test/llama3-tiny", "sk-serve-test");
  StopWithSigterm(*serve, port);
}

TEST(StrataServe, RefusesBadInputBeforeStartingAnything) {
  testing::ScratchDir dir = testing::MakeTempDir("serve");
  const fs::path config = dir.path() / "bad.yaml";
  std::ofstream(config) << "port: 8000\nmax-model-length: 4096\n";
  std::unique_ptr<ChildProcess> unknown = Serve({kModel, "--config", config.string()});
  EXPECT_EQ(unknown->Wait(std::chrono::seconds(20)), 2);
  EXPECT_THAT(unknown->err(), HasSubstr("bad.yaml:2: unknown key 'max-model-length': no flag --max-model-length"));

  std::unique_ptr<ChildProcess> absent =
      Serve({"org/absent-model"}, {"HF_HOME=" + dir.path().string(), "HF_HUB_CACHE="});
  EXPECT_EQ(absent->Wait(std::chrono::seconds(20)), 1);
  EXPECT_THAT(absent->err(), HasSubstr((dir.path() / "hub" / "models--org--absent-model").string()));
  EXPECT_THAT(absent->err(), HasSubstr("Strata never downloads"));

  std::unique_ptr<ChildProcess> size = Serve({kModel, "--kvstore-dram-bytes", "12 parsecs"});
  EXPECT_NE(size->Wait(std::chrono::seconds(20)), 0);
  EXPECT_THAT(size->err(), HasSubstr("'12 parsecs' is not a byte size"));

  std::unique_ptr<ChildProcess> env_size = Serve({kModel}, {"STRATA_HOST_CACHE_BYTES=lots"});
  EXPECT_NE(env_size->Wait(std::chrono::seconds(20)), 0);
  EXPECT_THAT(env_size->err(),
              HasSubstr("STRATA_HOST_CACHE_BYTES='lots': --host-cache-bytes: 'lots' is not a byte size"));
}

// The pid of the child of `parent` whose command is `name` (from /proc), or -1.
pid_t ChildNamed(pid_t parent, const std::string& name) {
  for (const fs::directory_entry& entry : fs::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    // pid (comm) state ppid ...
    const size_t open = text.find('('), close = text.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    std::istringstream rest(text.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent && text.substr(open + 1, close - open - 1) == name.substr(0, 15)) return std::stoi(pid);
  }
  return -1;
}

TEST(StrataServe, AChildsDeathBringsTheWholeDeploymentDownSayingWhich) {
  const int port = testing::FreePort();
  std::vector<std::string> args = {kModel, "--port", std::to_string(port)};
  for (const std::string& flag : QuickFlags()) args.push_back(flag);
  std::unique_ptr<ChildProcess> serve = Serve(args);
  WaitReady(*serve, port, "llama3-tiny");
  const pid_t worker = ChildNamed(serve->pid(), "strata-worker");
  ASSERT_GT(worker, 0);
  const pid_t scheduler = ChildNamed(serve->pid(), "strata-scheduler");
  ASSERT_GT(scheduler, 0);
  ASSERT_EQ(::kill(worker, SIGKILL), 0);
  const std::optional<int> code = serve->Wait(std::chrono::seconds(30));
  ASSERT_TRUE(code.has_value()) << "strata serve outlived its worker";
  EXPECT_EQ(*code, 1);
  EXPECT_THAT(serve->err(), HasSubstr("worker-0 (pid " + std::to_string(worker) + ") was killed by signal 9"));
  EXPECT_THAT(serve->err(), HasSubstr("stopped the others"));
  EXPECT_NE(::kill(scheduler, 0), 0) << "the scheduler still runs";
}

}  // namespace
}  // namespace strata
