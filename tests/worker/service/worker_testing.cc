#include "tests/worker/service/worker_testing.h"

#include <httplib.h>

#include <fstream>
#include <map>

#include "tests/testing/metrics_scrape.h"
#include "worker/engine/cpu_backend.h"
#include "worker/engine/engine.h"
#include "worker/engine/generate.h"
#include "model/model.h"
#include "worker/service/sampling_params.h"

namespace strata::worker::testing {
namespace {

int FieldAfter(const std::string& text, const std::string& key) {
  const size_t at = text.find(key);
  if (at == std::string::npos) return -1;
  return std::atoi(text.c_str() + at + key.size());
}

}  // namespace

std::string ModelDir(const std::string& name) { return std::string(STRATA_TEST_DATA_DIR) + "/models/" + name; }

absl::StatusOr<std::unique_ptr<WorkerProcess>> WorkerProcess::Start(const std::string& model_dir,
                                                                    std::vector<std::string> args) {
  std::unique_ptr<WorkerProcess> worker(new WorkerProcess());
  const std::string port_file = (worker->dir_.path() / "ports").string();
  std::vector<std::string> argv = {STRATA_WORKER_PATH, "--model",         model_dir, "--grpc-address",
                                   "127.0.0.1:0",      "--metrics-host",  "127.0.0.1", "--metrics-port",
                                   "0",                "--threads",       "1",       "--block-tokens",
                                   "16",               "--port-file",     port_file};
  // One cluster's workers: the same KV MAC secret, so that one's kvstore blocks verify on another.
  argv.insert(argv.end(), {"--kv-mac-key-file", STRATA_TEST_DATA_DIR "/kv_mac.key"});
  argv.insert(argv.end(), args.begin(), args.end());
  worker->process_ =
      std::make_unique<strata::testing::ChildProcess>(std::move(argv), strata::testing::ChildOutput::kInherit);
  bool exited = false;
  const bool ready = strata::testing::WaitFor(
      [&] {
        if (worker->process_->Wait(std::chrono::milliseconds(0)).has_value()) {
          exited = true;
          return true;
        }
        std::ifstream in(port_file);
        std::string line;
        if (!std::getline(in, line) || line.empty()) return false;
        worker->grpc_port_ = FieldAfter(line, "grpc_port=");
        worker->metrics_port_ = FieldAfter(line, "metrics_port=");
        return worker->grpc_port_ > 0;
      },
      std::chrono::seconds(30));
  if (exited) return absl::UnavailableError("strata-worker exited during start-up (see its stderr)");
  if (!ready) return absl::DeadlineExceededError("strata-worker did not serve within 30 s");
  worker->stub_ = proto::Worker::NewStub(grpc::CreateChannel(worker->address(), grpc::InsecureChannelCredentials()));
  return worker;
}

std::string WorkerProcess::Metrics() const {
  httplib::Client http("127.0.0.1", metrics_port_);
  http.set_read_timeout(5, 0);
  auto response = http.Get("/metrics");
  return response && response->status == 200 ? response->body : std::string();
}

double WorkerProcess::Metric(const std::string& series) const {
  return strata::testing::MetricValue(metrics_port_, series).value_or(-1);
}

absl::StatusOr<std::unique_ptr<SchedulerProcess>> SchedulerProcess::Start(int port) {
  std::unique_ptr<SchedulerProcess> scheduler(new SchedulerProcess());
  scheduler->process_ = std::make_unique<strata::testing::ChildProcess>(std::vector<std::string>{
      STRATA_SCHEDULER_PATH, "serve", "--grpc-address", "127.0.0.1:" + std::to_string(port), "--metrics-host", "127.0.0.1",
      "--metrics-port", "0", "--heartbeat-ms", "200", "--lease-ms", "3000"});
  const std::string log = scheduler->process_->ReadStderrUntil("event=scheduler_started", std::chrono::seconds(20));
  scheduler->grpc_port_ = FieldAfter(log, "grpc_port=");
  if (scheduler->grpc_port_ <= 0) return absl::UnavailableError("strata-scheduler did not start: " + log);
  scheduler->stub_ =
      proto::Scheduler::NewStub(grpc::CreateChannel(scheduler->address(), grpc::InsecureChannelCredentials()));
  return scheduler;
}

StreamResult Generate(proto::Worker::Stub& stub, const proto::GenerateRequest& request,
                      const std::function<void(const proto::GenerateResponse&, grpc::ClientContext&)>& on_message,
                      std::chrono::milliseconds timeout) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  StreamResult result;
  auto reader = stub.Generate(&context, request);
  proto::GenerateResponse response;
  while (reader->Read(&response)) {
    result.ids.insert(result.ids.end(), response.token_ids().begin(), response.token_ids().end());
    result.messages.push_back(response);
    if (on_message) on_message(response, context);
  }
  result.status = reader->Finish();
  return result;
}

proto::GenerateRequest GreedyRequest(const std::vector<int32_t>& prompt, uint32_t max_new_tokens, bool ignore_eos) {
  proto::GenerateRequest request;
  request.mutable_prompt_ids()->Add(prompt.begin(), prompt.end());
  request.set_max_new_tokens(max_new_tokens);
  request.set_ignore_eos(ignore_eos);
  return request;
}

std::vector<int32_t> Prompt(int tokens, int seed, int vocab) {
  std::vector<int32_t> ids(tokens);
  uint64_t state = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(seed + 1);
  for (int i = 0; i < tokens; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    ids[i] = 2 + static_cast<int32_t>((state >> 33) % static_cast<uint64_t>(vocab - 2));
  }
  return ids;
}

std::vector<int32_t> GenerateAlone(const std::string& model_dir, const proto::GenerateRequest& request) {
  struct Loaded {
    model::Model model;
    std::unique_ptr<engine::Engine> engine;
  };
  static std::map<std::string, std::unique_ptr<Loaded>>* loaded = new std::map<std::string, std::unique_ptr<Loaded>>();
  auto& slot = (*loaded)[model_dir];
  if (slot == nullptr) {
    absl::StatusOr<model::Model> model = model::OpenModel(model_dir);
    STRATA_CHECK(model.ok());
    slot.reset(new Loaded{*std::move(model), nullptr});
    auto engine = engine::Engine::Create(slot->model, engine::CreateCpuBackend({.threads = 1}));
    STRATA_CHECK(engine.ok());
    slot->engine = *std::move(engine);
  }
  engine::GenerateOptions options;
  options.max_new_tokens = request.max_new_tokens();
  options.sampling = SamplingOptionsOf(request.sampling());
  options.stop_token_ids.assign(request.stop_token_ids().begin(), request.stop_token_ids().end());
  if (!request.ignore_eos()) {
    for (int64_t id : slot->model.config.eos_token_ids) options.stop_token_ids.push_back(static_cast<int32_t>(id));
  }
  const std::vector<int32_t> prompt(request.prompt_ids().begin(), request.prompt_ids().end());
  absl::StatusOr<engine::GenerateResult> result = engine::Generate(*slot->engine, prompt, options);
  STRATA_CHECK(result.ok());
  return result->output_ids;
}

}  // namespace strata::worker::testing
