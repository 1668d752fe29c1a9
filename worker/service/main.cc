// strata-worker: serves one model over gRPC (proto/worker.proto). Flags map 1:1 onto
// worker::WorkerOptions (worker/service/options.h).
#include <iostream>
#include <map>

#include "CLI/CLI.hpp"
#include "common/daemon.h"
#include "common/flag_sources.h"
#include "common/grpc_security_flags.h"
#include "common/hf_cache.h"
#include "common/log.h"
#include "common/size_flags.h"
#include "common/strings.h"
#include "worker/service/worker_server.h"

int main(int argc, char** argv) {
  strata::BlockShutdownSignals();
  strata::worker::WorkerOptions o;
  CLI::App app{"strata-worker: serves a model with continuous batching and a KV cache over GPU memory, host memory and kvstores"};
  std::string model_dir, dtype = "bf16";
  app.add_option("--model", model_dir,
                 "Hugging Face model directory, or a model id in the local hub cache ($HF_HOME; never downloaded)")
      ->required();
  std::map<std::string, strata::worker::BackendKind> backends{{"auto", strata::worker::BackendKind::kAuto},
                                                              {"cpu", strata::worker::BackendKind::kCpu},
                                                              {"cuda", strata::worker::BackendKind::kCuda}};
  app.add_option("--backend", o.backend, "auto (cuda where a GPU is present, else cpu), cpu or cuda")
      ->transform(CLI::CheckedTransformer(backends, CLI::ignore_case))
      ->default_str("auto");
  app.add_option("--dtype", dtype, "CUDA backend: bf16 or f32")->capture_default_str();
  app.add_option("--threads", o.threads,
                 "CPU backend threads (0: every core). Several workers on one machine: give each its share and "
                 "run with OMP_WAIT_POLICY=passive, or idle OpenMP threads spin")
      ->capture_default_str();
  app.add_option("--mini-sequence", o.mini_sequence_tokens, "Rows per projection/MLP/LM-head pass in prefill")
      ->capture_default_str();
  app.add_option("--served-model-name", o.served_model_name, "Model name clients ask for (default: the directory name)");
  app.add_option("--worker-id", o.worker_id, "Id in the scheduler's registry (default: worker-<advertise address>)");
  app.add_option("--grpc-address", o.grpc_address, "gRPC listen address (port 0: any free)")->capture_default_str();
  app.add_option("--advertise-address", o.advertise_address, "host:port clients reach (default: the bound address)");
  app.add_option("--metrics-host", o.metrics_host, "/metrics and /healthz host")->capture_default_str();
  app.add_option("--metrics-port", o.metrics_port, "/metrics and /healthz port (0: any free, -1: off)")
      ->capture_default_str();
  app.add_option("--health-port", o.health_port,
                 "Plaintext gRPC port serving only grpc.health.v1.Health (0: any free, -1: off)")
      ->capture_default_str();
  app.add_option("--port-file", o.port_file, "Write 'grpc_port=N metrics_port=M health_port=H' here once serving");
  strata::AddRpcSecurityFlags(app, o.security);
  app.add_option("--max-context-tokens", o.max_context_tokens, "Cap on prompt + new tokens (0: the model's)")
      ->capture_default_str();
  app.add_option("--block-tokens", o.loop.block_tokens, "Tokens per KV block (the key scheme's block size)")
      ->capture_default_str();
  app.add_option("--max-running-requests", o.loop.max_running_requests, "Sequences in the batch at once")
      ->capture_default_str();
  app.add_option("--max-queued-requests", o.loop.max_queued_requests,
                 "Requests waiting for a batch slot; past it RESOURCE_EXHAUSTED")
      ->capture_default_str();
  app.add_option("--prefill-chunk-tokens", o.loop.prefill_chunk_tokens, "Most prompt tokens of a request per step")
      ->capture_default_str();
  app.add_option("--step-token-budget", o.loop.step_token_budget, "Most tokens per engine step")->capture_default_str();
  app.add_option("--kv-pool-bytes", o.kv_pool_bytes,
                 "Tier G: the paged KV pool every request's KV lives in (0: --gpu-memory-fraction on CUDA, 1 GiB on "
                 "the CPU)")
      ->capture_default_str()
      ->transform(strata::ByteSizeFlag());
  app.add_option("--gpu-memory-fraction", o.gpu_memory_fraction,
                 "CUDA: share of the GPU memory left after weights and activations that the KV pool takes")
      ->check(CLI::Range(0.01, 1.0))
      ->capture_default_str();
  using GpuCache = strata::worker::WorkerOptions::GpuCache;
  std::map<std::string, GpuCache> gpu_cache_modes{{"on", GpuCache::kOn}, {"off", GpuCache::kOff}};
  app.add_option("--gpu-cache", o.gpu_cache, "Tier G: keep finished requests' KV blocks in the pool for reuse (on|off)")
      ->transform(CLI::CheckedTransformer(gpu_cache_modes, CLI::ignore_case))
      ->default_str("on");
  app.add_option("--host-cache-bytes", o.host_cache_bytes, "Tier H: host memory for KV blocks (0: off)")
      ->capture_default_str()
      ->transform(strata::ByteSizeFlag());
  app.add_option("--kvstore", o.kvstores, "host:port of a strata-kvstore (repeat for several)");
  app.add_option("--kvstore-staging-bytes", o.kvstore_staging_bytes,
                 "Payload memory beyond tier H for kvstore transfers in flight (page-locked, UCX-registered with tier H's)")
      ->capture_default_str()
      ->transform(strata::ByteSizeFlag());
  using KvstoreFetch = strata::worker::WorkerOptions::KvstoreFetch;
  std::map<std::string, KvstoreFetch> fetch_modes{{"auto", KvstoreFetch::kAuto}, {"always", KvstoreFetch::kAlways}};
  app.add_option("--kvstore-fetch", o.kvstore_fetch,
                 "auto: fetch a prefix from the kvstores only when this worker measured it cheaper than computing it; "
                 "always: whenever they may hold it")
      ->transform(CLI::CheckedTransformer(fetch_modes, CLI::ignore_case))
      ->default_str("auto");
  std::map<std::string, strata::kvstore::PeerFailure> peer{{"detect", strata::kvstore::PeerFailure::kDetect},
                                                           {"timeout", strata::kvstore::PeerFailure::kTimeoutOnly}};
  app.add_option("--kvstore-peer-failure", o.kvstore_peer_failure,
                 "detect (UCX peer error handling, TCP on one host) or timeout (shared memory on one host)")
      ->transform(CLI::CheckedTransformer(peer, CLI::ignore_case))
      ->default_str("detect");
  std::string kv_mac_key_file;
  app.add_option("--kv-mac-key-file", kv_mac_key_file,
                 "Secret (at least 32 bytes) the workers sign KV blocks with; the same on every worker of a cluster "
                 "(default: random per process, so this worker's blocks verify only on itself)");
  app.add_option("--scheduler", o.scheduler_addresses,
                 "host:port of strata-scheduler (repeat, or comma-separate, for each replica; none: run alone)")
      ->delimiter(',');
  app.add_option("--prefill-s-per-token", o.prefill_s_per_token, "Prefill rate told to the scheduler (0: measure)")
      ->capture_default_str();
  app.add_option("--decode-tokens-per-s", o.decode_tokens_per_s, "Decode rate told to the scheduler (0: measure)")
      ->capture_default_str();
  app.add_option("--network-bytes-per-s", o.network_bytes_per_s,
                 "kvstore -> worker rate told to the scheduler (bytes per second, or e.g. 10GB)")
      ->capture_default_str()
      ->transform(strata::ByteRateFlag());
  int drain_ms = 10000;
  app.add_option("--drain-ms", drain_ms, "On SIGTERM, how long running requests may finish")->capture_default_str();
  strata::FlagSources sources(app);
  if (std::optional<int> exit_code = sources.Parse(app, argc, argv)) return *exit_code;
  absl::StatusOr<strata::ResolvedModel> model = strata::ResolveModel(model_dir);
  if (!model.ok()) {
    std::cerr << "strata-worker: --model: " << model.status().message() << "\n";
    return 1;
  }
  o.model_dir = model->dir;
  if (o.served_model_name.empty()) o.served_model_name = model->name;
  o.kv_mac_key_file = kv_mac_key_file;
  if (dtype == "bf16") {
    o.cuda_dtype = strata::DType::kBF16;
  } else if (dtype == "f32") {
    o.cuda_dtype = strata::DType::kF32;
  } else {
    std::cerr << "strata-worker: --dtype must be bf16 or f32, got '" << dtype << "'\n";
    return 1;
  }

  auto server = strata::worker::WorkerServer::Start(o);
  if (!server.ok()) {
    strata::LogError(strata::StrCat("error=start_failed message=\"", server.status().message(), "\""));
    std::cerr << "strata-worker: " << server.status().message() << "\n";
    return 1;
  }
  const int signal_number = strata::WaitForShutdownSignal();
  strata::LogInfo(strata::StrCat("event=shutdown_signal signal=", signal_number));
  (*server)->Shutdown(std::chrono::milliseconds(drain_ms));
  return 0;
}
