// Concurrent streams through the front door (issue 23): a strata-scheduler process with its front door,
// stand-in workers that stream tokens on a fixed schedule and compute nothing (so that what is measured is
// the front door, not an engine), and N streaming `/v1/completions` clients started together from several
// loopback addresses. Reported: streams held at once (counted by the stand-ins), streams completed and
// failed, TTFT (the stand-in sends its first token at once, so TTFT is the front door's own latency: HTTP,
// tokenization, placement, the worker call) and the stream's lag: the time from its first token to its
// last minus the stand-in's schedule for them (what the front door added to the pace; negative when the
// first token came later than the rest), p50 and p99; and the front door's threads and RSS while every
// stream is open. The baseline, in the same run: the same streams straight to the stand-ins over gRPC (the
// clients' and stand-ins' own cost on the same cores); "added" is the front door's pass minus it.
//
//   build/bin/strata_frontdoor_streams_bench [--streams 1000] [--tokens 64] [--token-interval-ms 100]
//                                            [--stand-ins 2] [--addresses 5] [--json FILE]
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "bench/cluster/completion_client.h"
#include "bench/cluster/report.h"
#include "common/block_key.h"
#include "common/dtype.h"
#include "common/status.h"
#include "common/strings.h"
#include "model/model.h"
#include "nlohmann/json.hpp"
#include "proto/worker.grpc.pb.h"
#include "scheduler/client/holder_agent.h"
#include "tests/testing/child_process.h"
#include "tests/testing/loopback.h"

namespace strata::frontdoor_bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int streams = 1000;
  uint32_t tokens = 64;
  int token_interval_ms = 100;
  int stand_ins = 2;
  int addresses = 5;  // client source addresses 127.0.0.2 ... (the front door caps connections per address)
  std::string scheduler_binary;
  std::string model = std::string(STRATA_TEST_DATA_DIR) + "/models/llama3-tiny";
  std::string json_path;
};

// A Worker service that streams `max_new_tokens` tokens, the first at once and then one every interval,
// and counts the streams it holds open. Sync gRPC: a sleeping server thread per stream (cheap here; the
// front door's threads are what is measured).
class StandInWorker final : public proto::Worker::Service {
 public:
  StandInWorker(const model::Model& model, std::string name, std::chrono::milliseconds interval)
      : model_(model), name_(std::move(name)), interval_(interval) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    STRATA_CHECK(server_ != nullptr && port_ != 0);
  }
  ~StandInWorker() override { server_->Shutdown(std::chrono::system_clock::now()); }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int max_open() const { return max_open_.load(); }
  void ResetMaxOpen() { max_open_ = 0; }

  grpc::Status Info(grpc::ServerContext*, const proto::InfoRequest*, proto::InfoResponse* response) override {
    response->set_model_name(name_);
    FillScheme(*response->mutable_key_scheme());
    response->set_max_context_tokens(static_cast<uint32_t>(model_.config.max_position_embeddings));
    response->set_backend("stand-in");
    return grpc::Status::OK;
  }

  grpc::Status Generate(grpc::ServerContext* context, const proto::GenerateRequest* request,
                        grpc::ServerWriter<proto::GenerateResponse>* writer) override {
    const int open = ++open_;
    for (int seen = max_open_.load(); open > seen && !max_open_.compare_exchange_weak(seen, open);) {
    }
    const auto start = Clock::now();
    uint32_t sent = 0;
    for (; sent < request->max_new_tokens() && !context->IsCancelled(); ++sent) {
      std::this_thread::sleep_until(start + sent * interval_);
      proto::GenerateResponse message;
      message.add_token_ids(static_cast<int32_t>(3 + sent % 200));
      if (!writer->Write(message)) break;
    }
    --open_;
    if (sent < request->max_new_tokens()) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
    proto::GenerateResponse last;
    last.set_finished(true);
    last.set_finish_reason(proto::FINISH_REASON_LENGTH);
    last.set_completion_tokens(sent);
    last.mutable_prefix()->set_prompt_tokens(static_cast<uint32_t>(request->prompt_ids_size()));
    last.mutable_prefix()->set_prefill_tokens(static_cast<uint32_t>(request->prompt_ids_size()));
    writer->Write(last);
    return grpc::Status::OK;
  }

  void FillScheme(proto::KeyScheme& scheme) const {
    scheme.set_version(kBlockKeySchemeVersion);
    scheme.set_block_tokens(16);
    scheme.set_model_fingerprint(std::string(model_.fingerprint.digest.begin(), model_.fingerprint.digest.end()));
    scheme.set_kv_dtype(std::string(DTypeName(DType::kF32)));
  }

 private:
  const model::Model& model_;
  const std::string name_;
  const std::chrono::milliseconds interval_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<int> open_{0}, max_open_{0};
};

// Registers `worker` with the scheduler as a worker with room for every request.
std::unique_ptr<scheduler::HolderAgent> Register(const StandInWorker& worker, const std::string& scheduler,
                                                 const std::string& id, const std::string& name) {
  scheduler::HolderAgentOptions options;
  options.scheduler_addresses = {scheduler};
  proto::RegisterRequest& r = options.registration;
  r.set_holder_id(id);
  r.set_kind(proto::HOLDER_KIND_WORKER);
  r.set_address(worker.address());
  worker.FillScheme(*r.mutable_key_scheme());
  proto::WorkerInfo& info = *r.mutable_worker();
  info.set_gpu_kv_blocks(1 << 20);
  info.set_host_kv_blocks(0);
  info.set_block_bytes(1 << 16);
  info.set_prefill_linear_s_per_token(1e-6);
  info.set_host_to_gpu_bytes_per_s(1e10);
  info.set_network_bytes_per_s(1e9);
  info.set_decode_tokens_per_s(1000);
  info.set_model_name(name);
  auto agent = std::make_unique<scheduler::HolderAgent>(
      std::move(options), scheduler::HolderAgentCallbacks{.inventory = [] { return scheduler::TierInventory{}; }});
  agent->Start();
  return agent;
}

// A field of /proc/PID/status ("Threads", "VmRSS": its number).
long ProcStatus(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

struct Pass {
  std::string name;
  int held = 0, completed = 0, failed = 0;
  std::string first_error;
  double ttft_p50_ms = 0, ttft_p99_ms = 0, lag_p50_ms = 0, lag_p99_ms = 0, wall_s = 0;
};

nlohmann::json ToJson(const Pass& p) {
  return {{"name", p.name},
          {"held_at_once", p.held},
          {"completed", p.completed},
          {"failed", p.failed},
          {"first_error", p.first_error},
          {"ttft_p50_ms", p.ttft_p50_ms},
          {"ttft_p99_ms", p.ttft_p99_ms},
          {"stream_lag_p50_ms", p.lag_p50_ms},
          {"stream_lag_p99_ms", p.lag_p99_ms},
          {"wall_s", p.wall_s}};
}

// Runs o.streams streams at once: make_call(i) prepares stream i's call on its own thread (connections
// made before the start), the calls start together; `midway` runs while every stream should be open.
template <typename MakeCall>
Pass RunPass(std::string name, const Options& o, MakeCall make_call,
             const std::vector<std::unique_ptr<StandInWorker>>& stand_ins, const std::function<void()>& midway = {}) {
  for (const auto& s : stand_ins) s->ResetMaxOpen();
  std::vector<cluster_bench::CompletionResult> results(o.streams);
  std::barrier start(o.streams + 1);
  std::vector<std::jthread> clients;
  for (int i = 0; i < o.streams; ++i) {
    clients.emplace_back([&, i] {
      auto call = make_call(i);
      start.arrive_and_wait();
      results[i] = call();
    });
  }
  start.arrive_and_wait();
  const auto began = Clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(o.tokens * o.token_interval_ms / 2));
  if (midway) midway();
  clients.clear();
  Pass pass{.name = std::move(name), .wall_s = Seconds(began)};
  std::vector<double> ttft_ms, lag_ms;
  const double schedule_s = (o.tokens - 1) * o.token_interval_ms / 1000.0;
  for (const cluster_bench::CompletionResult& r : results) {
    if (!r.ok) {
      ++pass.failed;
      if (pass.first_error.empty()) pass.first_error = r.error;
      continue;
    }
    ++pass.completed;
    ttft_ms.push_back(r.ttft_s * 1000);
    lag_ms.push_back((r.total_s - r.ttft_s - schedule_s) * 1000);
  }
  for (const auto& s : stand_ins) pass.held += s->max_open();
  pass.ttft_p50_ms = cluster_bench::Percentile(ttft_ms, 0.50);
  pass.ttft_p99_ms = cluster_bench::Percentile(ttft_ms, 0.99);
  pass.lag_p50_ms = cluster_bench::Percentile(lag_ms, 0.50);
  pass.lag_p99_ms = cluster_bench::Percentile(lag_ms, 0.99);
  return pass;
}

int Run(const Options& o) {
  // Each stream is a socket here and one in the front door (which inherits this limit): 1,000 pass the
  // usual soft limit of 1,024 descriptors.
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  absl::StatusOr<model::Model> model = model::OpenModel(o.model);
  if (!model.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  const std::string name = "tiny";
  std::vector<std::unique_ptr<StandInWorker>> stand_ins;
  for (int i = 0; i < o.stand_ins; ++i) {
    stand_ins.push_back(std::make_unique<StandInWorker>(*model, name, std::chrono::milliseconds(o.token_interval_ms)));
  }

  const int grpc_port = testing::FreePort(), http_port = testing::FreePort(), metrics_port = testing::FreePort();
  const std::string scheduler = "127.0.0.1:" + std::to_string(grpc_port);
  testing::ChildProcess door({o.scheduler_binary, "serve", "--grpc-address", scheduler, "--metrics-host", "127.0.0.1",
                              "--metrics-port", std::to_string(metrics_port), "--http-host", "127.0.0.1", "--http-port",
                              std::to_string(http_port), "--model-dir", o.model, "--served-model-name", name},
                             testing::ChildOutput::kInherit);
  if (!testing::WaitFor([&] { return testing::Healthy(http_port); }, std::chrono::seconds(30))) {
    std::fprintf(stderr, "error: the front door did not answer /health within 30 s\n");
    return 1;
  }
  std::vector<std::unique_ptr<scheduler::HolderAgent>> agents;
  for (int i = 0; i < o.stand_ins; ++i) {
    agents.push_back(Register(*stand_ins[i], scheduler, StrCat("stand-in-", i), name));
  }
  if (!testing::WaitFor(
          [&] { return std::all_of(agents.begin(), agents.end(), [](auto& a) { return a->connected(); }); },
          std::chrono::seconds(30))) {
    std::fprintf(stderr, "error: the stand-in workers did not register within 30 s\n");
    return 1;
  }
  const long threads_idle = ProcStatus(door.pid(), "Threads"), rss_idle = ProcStatus(door.pid(), "VmRSS");

  // The baseline first: the same streams straight to the stand-ins over gRPC (what the clients and the
  // stand-ins cost on these cores without a front door), then through the front door's HTTP.
  const Pass direct = RunPass(
      "direct", o,
      [&](int i) {
        auto channel = grpc::CreateChannel(stand_ins[i % o.stand_ins]->address(), grpc::InsecureChannelCredentials());
        auto stub = proto::Worker::NewStub(channel);
        channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30));
        return [stub = std::shared_ptr<proto::Worker::Stub>(std::move(stub)), &o, i]() {
          proto::GenerateRequest request;
          for (int t = 0; t < 16; ++t) request.add_prompt_ids(10 + (i * 16 + t) % 400);
          request.set_max_new_tokens(o.tokens);
          grpc::ClientContext context;
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
          const auto sent = Clock::now();
          auto reader = stub->Generate(&context, request);
          cluster_bench::CompletionResult result;
          proto::GenerateResponse message;
          while (reader->Read(&message)) {
            if (message.token_ids_size() > 0 && result.chunks++ == 0) result.ttft_s = Seconds(sent);
          }
          const grpc::Status status = reader->Finish();
          result.total_s = Seconds(sent);
          result.ok = status.ok();
          if (!status.ok()) result.error = status.error_message();
          return result;
        };
      },
      stand_ins);
  long threads_busy = 0, rss_busy = 0;
  const Pass door_pass = RunPass(
      "front door", o,
      [&](int i) {
        return [&o, i, http_port, &name]() {
          cluster_bench::CompletionClient client({.host = "127.0.0.1",
                                                  .port = http_port,
                                                  .timeout_s = 120,
                                                  .local_address = StrCat("127.0.0.", 2 + i % o.addresses)});
          cluster_bench::CompletionRequest request{.model = name, .max_tokens = o.tokens};
          for (int t = 0; t < 16; ++t) request.prompt_ids.push_back(10 + (i * 16 + t) % 400);
          return client.Complete(request);
        };
      },
      stand_ins,
      [&] {
        threads_busy = ProcStatus(door.pid(), "Threads");
        rss_busy = ProcStatus(door.pid(), "VmRSS");
      });
  nlohmann::json out = {{"streams", o.streams},
                        {"tokens", o.tokens},
                        {"token_interval_ms", o.token_interval_ms},
                        {"passes", {ToJson(direct), ToJson(door_pass)}},
                        {"added_ttft_p50_ms", door_pass.ttft_p50_ms - direct.ttft_p50_ms},
                        {"added_ttft_p99_ms", door_pass.ttft_p99_ms - direct.ttft_p99_ms},
                        {"frontdoor_threads_idle", threads_idle},
                        {"frontdoor_threads_busy", threads_busy},
                        {"frontdoor_rss_kib_idle", rss_idle},
                        {"frontdoor_rss_kib_busy", rss_busy}};
  std::printf("%s\n", out.dump(2).c_str());
  if (!o.json_path.empty()) std::ofstream(o.json_path) << out.dump() << "\n";
  const int failed = direct.failed + door_pass.failed;
  agents.clear();
  door.Signal(SIGTERM);
  door.Wait(std::chrono::seconds(10));
  return failed == 0 ? 0 : 2;
}

}  // namespace
}  // namespace strata::frontdoor_bench

int main(int argc, char** argv) {
  strata::frontdoor_bench::Options o;
  o.scheduler_binary = (std::filesystem::path(argv[0]).parent_path() / "strata-scheduler").string();
  CLI::App app("Concurrent streams through the front door, against stand-in workers");
  app.add_option("--streams", o.streams, "concurrent streaming requests")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--tokens", o.tokens, "tokens per stream")->capture_default_str()->check(CLI::Range(2, 100000));
  app.add_option("--token-interval-ms", o.token_interval_ms, "the stand-ins' time between tokens")
      ->capture_default_str()
      ->check(CLI::Range(1, 60000));
  app.add_option("--stand-ins", o.stand_ins, "stand-in workers")->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--addresses", o.addresses, "client source addresses (127.0.0.2 on)")
      ->capture_default_str()
      ->check(CLI::Range(1, 250));
  app.add_option("--scheduler", o.scheduler_binary, "the strata-scheduler binary")->capture_default_str();
  app.add_option("--model", o.model, "model directory (its tokenizer and fingerprint)")->capture_default_str();
  app.add_option("--json", o.json_path, "also write the result here");
  CLI11_PARSE(app, argc, argv);
  return strata::frontdoor_bench::Run(o);
}
