// Options of strata-worker; its flags map onto these 1:1 (worker/service/main.cc).
#ifndef STRATA_WORKER_SERVICE_OPTIONS_H_
#define STRATA_WORKER_SERVICE_OPTIONS_H_

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/rpc_security_options.h"
#include "kvstore/client/client.h"
#include "worker/service/engine_loop.h"

namespace strata::worker {

// kAuto: CUDA where this build has it and a GPU is present, else the CPU (said in the log at start).
enum class BackendKind { kAuto, kCpu, kCuda };

inline constexpr uint64_t kDefaultCpuKvPoolBytes = 1ull << 30;

struct WorkerOptions {
  std::filesystem::path model_dir;       // required
  BackendKind backend = BackendKind::kAuto;
  DType cuda_dtype = DType::kBF16;       // --dtype for the CUDA backend
  int threads = 0;                       // CPU backend threads; 0: every core
  int64_t mini_sequence_tokens = 1024;
  std::string served_model_name;         // empty: the model directory's name
  std::string worker_id;                 // empty: "worker-" + advertise address
  // Listen addresses: loopback unless given (a deployment passes 0.0.0.0 or a pod IP).
  std::string grpc_address = "127.0.0.1:50080";
  std::string advertise_address;         // empty: grpc_address with the bound port
  std::string metrics_host = "127.0.0.1";
  int metrics_port = 9480;               // 0: any free port, -1: off
  int health_port = -1;                  // plaintext gRPC with only grpc.health.v1.Health; 0: any, -1: off
  // Mutual TLS and the shared token of the gRPC port and of the channels to the scheduler and the
  // kvstores (common/grpc_security.h). Default: neither.
  RpcSecurityOptions security;
  std::string port_file;                 // when set: "grpc_port=N metrics_port=M health_port=H" once serving
  int64_t max_context_tokens = 0;        // 0: the model's max_position_embeddings (never more)
  EngineLoopOptions loop;                // block size, batch and queue limits, prefill chunk, step budget
  // Tier G, the paged KV pool that every request's KV lives in: kv_pool_bytes, or (0, CUDA) the
  // gpu_memory_fraction of the GPU memory left once the weights and a step's activations are set aside
  // (as vLLM's --gpu-memory-utilization), or (0, CPU) kDefaultCpuKvPoolBytes.
  uint64_t kv_pool_bytes = 0;
  double gpu_memory_fraction = 0.9;
  // Whether finished sequences' blocks stay in the pool for later prompts (tier G). kOff: every prefix
  // comes from tier H or the kvstores.
  enum class GpuCache { kOn, kOff };
  GpuCache gpu_cache = GpuCache::kOn;
  uint64_t host_cache_bytes = 1ull << 30;   // tier H; 0: off
  std::vector<std::string> kvstores;        // host:port each; empty: no kvstore tier
  // Payload memory beyond tier H's, for blocks in flight to and from the kvstores (one region with tier
  // H's, page-locked on a GPU and registered with UCX).
  uint64_t kvstore_staging_bytes = 64ull << 20;
  // kAuto: a prompt's missing blocks are fetched only when the worker's own measurements say fetching
  // beats computing them (worker/prefix/fetch_policy.h); kAlways: whenever the kvstores may hold them.
  enum class KvstoreFetch { kAuto, kAlways };
  KvstoreFetch kvstore_fetch = KvstoreFetch::kAuto;
  kvstore::PeerFailure kvstore_peer_failure = kvstore::PeerFailure::kDetect;
  // The secret the workers sign KV blocks with (worker/prefix/block_mac.h): the same file on every worker
  // of a cluster, so one worker's blocks verify on another. Empty: a random secret per process (the
  // worker's blocks then verify only on itself; logged at start).
  std::filesystem::path kv_mac_key_file;
  std::vector<std::string> scheduler_addresses;  // each scheduler replica; empty: run alone (no registration)
  // What registration tells placement. 0: measured at start-up (a short prefill and decode run).
  double prefill_s_per_token = 0;
  double decode_tokens_per_s = 0;
  int64_t calibration_tokens = 128;
  // Not measured (no transfer is made at start-up): stated, for placement's fetch estimate.
  double network_bytes_per_s = 1e9;
  double host_to_gpu_bytes_per_s = 10e9;
};

}  // namespace strata::worker

#endif  // STRATA_WORKER_SERVICE_OPTIONS_H_
