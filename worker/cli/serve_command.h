// `strata serve MODEL`: a whole single-node deployment in one command. It supervises the cluster's own
// daemons as child processes on loopback (worker/cli/README.md says why): one strata-scheduler with the
// OpenAI-compatible front door on --host:--port, a strata-worker per visible GPU (CUDA) or one on the CPU,
// and, when asked for, a strata-kvstore. Ports between them are chosen by the daemons (port files); the
// command returns when SIGINT or SIGTERM stops them all, or when one dies (then it stops the others).
#ifndef STRATA_WORKER_CLI_SERVE_COMMAND_H_
#define STRATA_WORKER_CLI_SERVE_COMMAND_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace strata::cli {

struct ServeCommand {
  std::string model;               // a model directory, or a Hugging Face id found in the local hub cache
  std::string served_model_name;   // empty: the id as given, or the directory's name
  std::string host = "127.0.0.1";  // the front door's HTTP address (0.0.0.0: every interface)
  int port = 8000;
  std::string api_key;        // when set, requests need `Authorization: Bearer <key>` (tenant "default")
  std::string api_keys_file;  // the scheduler's --api-keys file (several keys, tenants, limits)
  enum class Backend { kAuto, kCpu, kCuda };
  Backend backend = Backend::kAuto;        // kAuto: CUDA, a worker per visible GPU, where there is one; else the CPU
  std::string dtype = "bf16";              // the CUDA backend's: bf16 or f32
  double gpu_memory_fraction = 0.9;        // the KV pool's share of the GPU memory left after the weights
  int64_t max_model_len = 0;               // 0: the model's max_position_embeddings
  uint64_t kv_pool_bytes = 0;              // tier G; 0: gpu_memory_fraction on CUDA, 1 GiB on the CPU
  uint64_t host_cache_bytes = 1ull << 30;  // tier H per worker; 0: off
  int threads = 0;                         // CPU worker threads; 0: every core
  uint32_t block_tokens = 16;
  // The kvstore (tiers S and D): started when either is set.
  uint64_t kvstore_dram_bytes = 0;
  std::filesystem::path kvstore_ssd_dir;  // created when missing
  uint64_t kvstore_ssd_bytes = 0;         // 0: no limit but the disk
  bool shared_prefix_cache = false;       // every caller shares one prefix cache (scheduler --shared-prefix-cache)
  int metrics_port = 0;                   // the scheduler's /metrics (front door and scheduler series); 0: any
  // Extra flags for each kind of daemon, appended last (a later flag wins where CLI11 takes one value).
  std::vector<std::string> scheduler_args, worker_args, kvstore_args;
  std::filesystem::path bin_dir;   // where strata-scheduler, -worker and -kvstore are; empty: beside strata
  int64_t start_timeout_s = 1800;  // for every worker to load its model and register
  int64_t stop_timeout_s = 30;     // SIGTERM, then SIGKILL after this
  // Environment variables the children must not see: `strata serve`'s own STRATA_* flags (and
  // STRATA_CONFIG), which would otherwise set the daemons' flags of the same names a second time.
  std::vector<std::string> unset_env;
};

// Runs the deployment until SIGINT or SIGTERM (OK) or until a child dies or does not start (an error
// naming it; the others are stopped first). Call it from main before any other thread starts: it blocks
// SIGINT, SIGTERM and SIGCHLD to wait for them.
absl::Status RunServe(const ServeCommand& command);

}  // namespace strata::cli

#endif  // STRATA_WORKER_CLI_SERVE_COMMAND_H_
