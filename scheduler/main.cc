// strata-scheduler: `serve` (the default) runs the daemon; `replay` runs a trace against a simulated
// cluster. Flags map 1:1 onto scheduler::Options and replay::ReplayOptions; no logic lives here.
#include <malloc.h>

#include <cstdio>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_split.h"
#include "common/daemon.h"
#include "common/file.h"
#include "common/flag_sources.h"
#include "common/grpc_security_flags.h"
#include "common/hf_cache.h"
#include "common/log.h"
#include "common/size_flags.h"
#include "common/strings.h"
#include "scheduler/frontdoor/frontdoor.h"
#include "scheduler/options.h"
#include "scheduler/replay/replay.h"
#include "scheduler/service.h"

namespace {

using strata::StrCat;
namespace sched = strata::scheduler;
namespace replay = strata::scheduler::replay;

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "strata-scheduler: %s\n", std::string(status.message()).c_str());
  return 1;
}

// Request bodies are large (up to --max-request-bytes) and short-lived. With a fixed mmap threshold every
// allocation of a MiB or more is a mapping of its own, given back to the system when freed (and grown by
// mremap, without a copy); glibc's default threshold rises to 32 MiB after the first such free, and then
// keeps each body's memory in the arena of the HTTP thread that read it.
constexpr int kMmapThresholdBytes = 1 << 20;

int Serve(const sched::Options& options) {
  strata::BlockShutdownSignals();
  mallopt(M_MMAP_THRESHOLD, kMmapThresholdBytes);
  absl::StatusOr<std::unique_ptr<sched::SchedulerServer>> server = sched::SchedulerServer::Start(options);
  if (!server.ok()) return Fail(server.status());
  std::unique_ptr<strata::frontdoor::FrontDoor> front_door;
  if (!options.model_dir.empty()) {
    absl::StatusOr<std::unique_ptr<strata::frontdoor::FrontDoor>> started =
        strata::frontdoor::FrontDoor::Start(options, &(*server)->scheduler(), &(*server)->metrics());
    if (!started.ok()) {
      (*server)->Shutdown(absl::ZeroDuration());
      return Fail(started.status());
    }
    front_door = *std::move(started);
  } else {
    strata::LogInfo("event=frontdoor_off reason=no_model_dir");
  }
  if (!options.port_file.empty()) {
    absl::Status written = strata::WriteFileAtomically(
        options.port_file, StrCat("grpc_port=", (*server)->grpc_port(), " metrics_port=", (*server)->metrics_port(),
                                  " http_port=", front_door != nullptr ? front_door->http_port() : -1, "\n"));
    if (!written.ok()) {
      if (front_door != nullptr) front_door->Shutdown();
      (*server)->Shutdown(absl::ZeroDuration());
      return Fail(written);
    }
  }
  const int signal_number = strata::WaitForShutdownSignal();
  strata::LogInfo(StrCat("event=shutdown_signal signal=", signal_number));
  if (front_door != nullptr) front_door->Shutdown();
  (*server)->Shutdown(absl::Seconds(5));
  return 0;
}

absl::StatusOr<std::vector<sched::Policy>> ParsePolicies(const std::string& list) {
  std::vector<sched::Policy> out;
  for (absl::string_view name : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    std::optional<sched::Policy> policy = sched::PolicyFromName(std::string_view(name.data(), name.size()));
    if (!policy) {
      return absl::InvalidArgumentError(
          StrCat("--policies: unknown policy '", std::string(name), "' (round-robin, least-loaded, cache-aware)"));
    }
    out.push_back(*policy);
  }
  if (out.empty()) return absl::InvalidArgumentError("--policies: none given");
  return out;
}

int Replay(const std::string& trace_path, replay::ReplayOptions options, const std::string& policies_list,
           const std::string& sweep_list, const std::string& plot_path, bool json) {
  absl::StatusOr<std::vector<sched::Policy>> policies = ParsePolicies(policies_list);
  if (!policies.ok()) return Fail(policies.status());
  absl::StatusOr<std::vector<replay::TraceRequest>> trace = replay::ReadMooncakeTrace(trace_path, options.block_tokens);
  if (!trace.ok()) return Fail(trace.status());
  if (!sweep_list.empty()) {
    std::vector<double> loads;
    for (absl::string_view item : absl::StrSplit(sweep_list, ',', absl::SkipEmpty())) {
      double load = 0;
      if (!absl::SimpleAtod(item, &load) || !(load > 0)) {
        return Fail(absl::InvalidArgumentError(StrCat("--sweep: '", std::string(item), "' is not a load factor > 0")));
      }
      loads.push_back(load);
    }
    absl::StatusOr<std::vector<replay::SweepPoint>> sweep = replay::RunSweep(*trace, options, *policies, loads);
    if (!sweep.ok()) return Fail(sweep.status());
    std::printf("%s",
                json ? (replay::FormatSweepJson(*sweep) + "\n").c_str() : replay::FormatSweepTable(*sweep).c_str());
    if (!plot_path.empty()) {
      absl::Status plotted = replay::PlotSweep(*sweep, options, plot_path);
      if (!plotted.ok()) return Fail(plotted);
      if (!json) std::printf("plot: %s\n", plot_path.c_str());
    }
    return 0;
  }
  absl::StatusOr<replay::ReplayReport> report = replay::RunPolicies(*trace, options, *policies);
  if (!report.ok()) return Fail(report.status());
  std::printf("%s\n", json ? replay::FormatJson(*report).c_str() : replay::FormatTable(*report).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"strata-scheduler: cluster registry, global block index and cache-aware placement"};
  app.require_subcommand(0, 1);

  sched::Options options;
  CLI::App* serve = app.add_subcommand("serve", "Run the scheduler daemon (the default)");
  int64_t lease_ms = 5000, heartbeat_ms = 1000, tie_window_ms = 5;
  std::string policy_name = "cache-aware";
  serve->add_option("--grpc-address", options.grpc_address, "gRPC listen address")->capture_default_str();
  serve->add_option("--metrics-host", options.metrics_host, "/metrics and /healthz host")->capture_default_str();
  serve->add_option("--metrics-port", options.metrics_port, "/metrics port (0: any free)")->capture_default_str();
  strata::AddRpcSecurityFlags(*serve, options.security);
  serve->add_option("--health-port", options.health_port,
                    "plaintext gRPC port serving only grpc.health.v1.Health (-1: off, 0: any free)")
      ->capture_default_str();
  serve->add_option("--port-file", options.port_file,
                    "write 'grpc_port=N metrics_port=M http_port=H' here once serving");
  serve->add_option("--lease-ms", lease_ms, "lease of a holder without heartbeats")->capture_default_str();
  serve->add_option("--heartbeat-ms", heartbeat_ms, "heartbeat interval told to holders")->capture_default_str();
  serve->add_option("--index-capacity-blocks", options.index_capacity_blocks, "index bound")->capture_default_str();
  serve->add_option("--policy", policy_name, "round-robin | least-loaded | cache-aware")->capture_default_str();
  serve->add_option("--tie-window-ms", tie_window_ms, "estimates this close are ties")->capture_default_str();
  int64_t queue_slack_ms = 2000, load_knee_ms = 1000, silence_warning_s = 30;
  serve->add_option("--load-bound", options.load_bound, "cache-aware: candidates' queue <= (1+this) x mean + slack")
      ->capture_default_str();
  serve->add_option("--queue-slack-ms", queue_slack_ms, "cache-aware: the slack of that bound")->capture_default_str();
  serve->add_option("--load-knee-ms", load_knee_ms, "cache-aware: queue weight knee / (knee + mean queue)")
      ->capture_default_str();
  serve->add_option("--silence-warning-s", silence_warning_s, "log a holder whose sent events do not arrive")
      ->capture_default_str();
  serve->add_option("--model-dir", options.model_dir,
                    "front door: the served model's tokenizer.json, config.json, tokenizer_config.json (no front "
                    "door without it): a directory, or a Hugging Face id in the local hub cache ($HF_HOME)");
  serve->add_option("--served-model-name", options.served_model_name,
                    "front door: the model name clients ask for (default: base name of --model-dir)");
  serve->add_option("--http-host", options.http_host, "front door: HTTP host")->capture_default_str();
  serve->add_option("--http-port", options.http_port, "front door: OpenAI-compatible HTTP port (0: off)")
      ->capture_default_str();
  serve
      ->add_option("--http-max-connections", options.http_max_connections,
                   "front door: open HTTP connections at most (each holds a thread; 503 beyond)")
      ->capture_default_str();
  serve
      ->add_option("--http-max-connections-per-address", options.http_max_connections_per_address,
                   "front door: open HTTP connections at most from one client address (503 beyond; 0: no cap)")
      ->capture_default_str();
  double http_header_timeout_s = 10, http_read_timeout_s = 10, http_keep_alive_timeout_s = 5;
  serve->add_option("--http-header-timeout-s", http_header_timeout_s, "front door: deadline of a request's head")
      ->capture_default_str();
  serve
      ->add_option("--http-read-timeout-s", http_read_timeout_s,
                   "front door: longest silence while a request's body arrives")
      ->capture_default_str();
  serve
      ->add_option("--http-keep-alive-timeout-s", http_keep_alive_timeout_s,
                   "front door: longest idle time of a kept-alive HTTP connection")
      ->capture_default_str();
  serve->add_option("--frontdoor-grpc-address", options.frontdoor_grpc_address,
                    "front door: FrontDoor gRPC service address (default: off)");
  serve->add_option("--api-keys", options.api_keys_file,
                    "front door: file of `key tenant` lines; requests then need Authorization: Bearer key");
  bool shared_prefix_cache = false, omit_cached_tokens = false, http_metrics = false;
  serve->add_flag("--shared-prefix-cache", shared_prefix_cache,
                  "front door without --api-keys: every caller shares one prefix cache (default: each client "
                  "address, narrowed by the request's `user`, has its own; shared KV is a timing side channel)");
  serve->add_flag("--omit-cached-tokens", omit_cached_tokens,
                  "front door: leave the cached-token counts (usage.prompt_tokens_details, usage.strata) out of "
                  "responses");
  serve->add_flag("--http-metrics", http_metrics,
                  "front door: also serve /metrics on the public HTTP port (default: only the metrics port)");
  int64_t request_timeout_s = 600;
  serve->add_option("--request-timeout-s", request_timeout_s, "front door: deadline of a request's worker stream")
      ->capture_default_str();
  serve->add_option("--max-request-bytes", options.max_request_bytes,
                    "front door: largest request body, e.g. 16MiB (413 beyond; 0: no limit)")
      ->capture_default_str()
      ->transform(strata::ByteSizeFlag());
  serve
      ->add_option("--max-json-depth", options.max_json_depth,
                   "front door: deepest nesting of a JSON body, checked as it arrives (400 beyond; 0: no limit)")
      ->capture_default_str();
  serve
      ->add_option("--max-json-elements", options.max_json_elements,
                   "front door: most elements (containers and commas) of a JSON body (400 beyond; 0: no limit)")
      ->capture_default_str();
  serve->add_option("--max-prompt-tokens", options.max_prompt_tokens,
                    "front door: most prompt tokens per request, after the chat template (0: the context)")
      ->capture_default_str();
  serve->add_option("--max-completion-tokens", options.max_completion_tokens,
                    "front door: most max_tokens per request; an absent max_tokens is capped by it (0: the context)")
      ->capture_default_str();
  serve->add_option("--rate-limit-rps", options.rate_limit_rps,
                    "front door: requests per second per API key, 429 beyond (0: unlimited; key file: rps=)")
      ->capture_default_str();
  serve->add_option("--rate-limit-burst", options.rate_limit_burst,
                    "front door: burst of that rate (0: max(1, rps); key file: burst=)")
      ->capture_default_str();
  serve->add_option("--max-concurrent-requests-per-key", options.max_concurrent_requests_per_key,
                    "front door: requests open at once per API key, streams included (0: unlimited; key file: "
                    "concurrency=)")
      ->capture_default_str();

  replay::ReplayOptions replay_options;
  std::string trace_path, policies = "round-robin,least-loaded,cache-aware", sweep, plot;
  bool json = false;
  CLI::App* rep = app.add_subcommand("replay", "Replay a Mooncake-format trace against a simulated cluster");
  rep->add_option("--trace", trace_path, "JSONL trace (timestamp, input_length, output_length, hash_ids)")->required();
  rep->add_option("--workers", replay_options.workers, "simulated workers")->capture_default_str();
  rep->add_option("--gpu-blocks", replay_options.gpu_blocks_per_worker, "tier G per worker, blocks")
      ->capture_default_str();
  rep->add_option("--host-blocks", replay_options.host_blocks_per_worker, "tier H per worker, blocks")
      ->capture_default_str();
  rep->add_option("--kvstores", replay_options.kvstores, "simulated kvstores")->capture_default_str();
  rep->add_option("--kvstore-dram-blocks", replay_options.kvstore_dram_blocks, "tier S per kvstore, blocks")
      ->capture_default_str();
  rep->add_option("--kvstore-ssd-blocks", replay_options.kvstore_ssd_blocks, "tier D per kvstore, blocks")
      ->capture_default_str();
  rep->add_option("--time-scale", replay_options.time_scale, "load: trace time compressed by this")
      ->capture_default_str();
  rep->add_option("--slo-ttft-s", replay_options.slo_ttft_s, "TTFT SLO, seconds")->capture_default_str();
  rep->add_option("--max-requests", replay_options.max_requests, "first N requests only (0: all)")
      ->capture_default_str();
  rep->add_option("--policies", policies, "comma-separated policies")->capture_default_str();
  rep->add_option("--sweep", sweep, "comma-separated loads, e.g. 1,2,4,8,16: TTFT p90 per policy per load");
  rep->add_option("--plot", plot, "with --sweep: write this PNG (gnuplot)");
  rep->add_flag("--json", json, "print the table as one JSON object");

  strata::FlagSources serve_sources(*serve);
  if (std::optional<int> exit_code = serve_sources.Parse(app, argc, argv)) return *exit_code;
  if (rep->parsed()) return Replay(trace_path, replay_options, policies, sweep, plot, json);

  std::optional<sched::Policy> policy = sched::PolicyFromName(policy_name);
  if (!policy) return Fail(absl::InvalidArgumentError(StrCat("--policy: unknown policy '", policy_name, "'")));
  if (lease_ms <= 0 || heartbeat_ms <= 0 || heartbeat_ms * 2 > lease_ms || tie_window_ms < 0) {
    return Fail(
        absl::InvalidArgumentError("--lease-ms and --heartbeat-ms must be > 0 with at least two heartbeats "
                                   "per lease; --tie-window-ms >= 0"));
  }
  if (!(options.load_bound >= 0) || queue_slack_ms < 0 || load_knee_ms <= 0 || silence_warning_s <= 0 ||
      options.index_capacity_blocks == 0) {
    return Fail(
        absl::InvalidArgumentError("--load-bound and --queue-slack-ms must be >= 0, --load-knee-ms, "
                                   "--silence-warning-s and --index-capacity-blocks > 0"));
  }
  options.queue_slack = absl::Milliseconds(queue_slack_ms);
  options.load_knee = absl::Milliseconds(load_knee_ms);
  options.silence_warning = absl::Seconds(silence_warning_s);
  options.default_policy = *policy;
  options.lease = absl::Milliseconds(lease_ms);
  options.heartbeat_interval = absl::Milliseconds(heartbeat_ms);
  options.tie_window = absl::Milliseconds(tie_window_ms);
  options.prefix_cache_sharing =
      shared_prefix_cache ? sched::PrefixCacheSharing::kShared : sched::PrefixCacheSharing::kPerClient;
  options.cache_report = omit_cached_tokens ? sched::CacheReport::kHidden : sched::CacheReport::kShown;
  options.http_metrics = http_metrics ? sched::HttpMetrics::kOn : sched::HttpMetrics::kOff;
  if (options.max_json_depth < 0 || options.max_prompt_tokens < 0 || options.max_completion_tokens < 0 ||
      !(options.rate_limit_rps >= 0) || !(options.rate_limit_burst >= 0) ||
      options.max_concurrent_requests_per_key < 0) {
    return Fail(absl::InvalidArgumentError(
        "--max-json-depth, --max-prompt-tokens, --max-completion-tokens, --rate-limit-rps, --rate-limit-burst and "
        "--max-concurrent-requests-per-key must be >= 0 (0: no limit)"));
  }
  if (options.http_port < 0 || options.http_port > 65535 || request_timeout_s <= 0) {
    return Fail(absl::InvalidArgumentError("--http-port must be in [0, 65535] and --request-timeout-s > 0"));
  }
  if (options.http_max_connections <= 0 || options.http_max_connections_per_address < 0 ||
      !(http_header_timeout_s > 0) || !(http_read_timeout_s > 0) || !(http_keep_alive_timeout_s > 0)) {
    return Fail(absl::InvalidArgumentError(
        "--http-max-connections and the --http-*-timeout-s flags must be > 0, --http-max-connections-per-address "
        ">= 0 (0: no cap)"));
  }
  options.http_header_timeout = absl::Seconds(http_header_timeout_s);
  options.http_read_timeout = absl::Seconds(http_read_timeout_s);
  options.http_keep_alive_timeout = absl::Seconds(http_keep_alive_timeout_s);
  if (options.http_port == 0) options.http_port = -1;  // the flag's 0 is "off"; Options' 0 is "any port"
  options.request_timeout = absl::Seconds(request_timeout_s);
  if (!options.model_dir.empty()) {
    absl::StatusOr<strata::ResolvedModel> model = strata::ResolveModel(options.model_dir);
    if (!model.ok()) return Fail(absl::Status(model.status().code(), StrCat("--model-dir: ", model.status().message())));
    options.model_dir = model->dir.string();
    if (options.served_model_name.empty()) options.served_model_name = model->name;
  }
  return Serve(options);
}
