// The scheduler's options: one struct, flags of `strata-scheduler serve` map onto it 1:1.
#ifndef STRATA_SCHEDULER_OPTIONS_H_
#define STRATA_SCHEDULER_OPTIONS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "common/rpc_security_options.h"

namespace strata::scheduler {

enum class Policy : uint8_t { kRoundRobin, kLeastLoaded, kCacheAware };

// Front door, without API keys: whether callers share one prefix cache (kShared, one tenant "default")
// or each client address, narrowed by a request's `user`, is its own tenant (kPerClient). Shared KV across
// callers is a timing side channel (ARCHITECTURE.md "Tenants"); with API keys the key's tenant decides.
enum class PrefixCacheSharing : uint8_t { kPerClient, kShared };
// Whether responses tell how much of the prompt was cached (usage.prompt_tokens_details.cached_tokens and
// Strata's cached_* / prefill counts). Where callers share a cache, the count tells one what another sent.
enum class CacheReport : uint8_t { kShown, kHidden };
// Whether the front door's public HTTP port also serves /metrics (the metrics port always does).
enum class HttpMetrics : uint8_t { kOff, kOn };

std::string_view PolicyName(Policy policy);                   // "round-robin", ...
std::optional<Policy> PolicyFromName(std::string_view name);  // inverse; nullopt for anything else

struct Options {
  // A holder whose last heartbeat is older than this leaves placement and the index. Default 5 s.
  absl::Duration lease = absl::Seconds(5);
  // What holders are told to heartbeat at (a third of the lease or less). Default 1 s.
  absl::Duration heartbeat_interval = absl::Seconds(1);
  // Index capacity in blocks. An entry costs ~60-100 bytes (16-byte key, 32-byte holder sets, table
  // slack), so the default 4Mi blocks stays under ~400 MiB. When full, STORED events for new keys are
  // dropped and counted (existing keys still gain and lose holders): the index is a hint, and the
  // blocks already in it are the older, more shared prefixes.
  uint64_t index_capacity_blocks = uint64_t{4} << 20;
  Policy default_policy = Policy::kCacheAware;
  // Candidates whose estimates are within this of the best one are ties, broken in rotation so that
  // equal workers do not herd onto one. Default 5 ms.
  absl::Duration tie_window = absl::Milliseconds(5);
  // cache-aware under load (placement.h says how they combine). A worker is a candidate only while its
  // queue is within (1 + load_bound) x the mean queue + queue_slack (default 0.5 and 2 s): a hot prefix
  // spreads once its holder is that far behind. Queue time weighs load_knee / (load_knee + mean queue)
  // against the work a worker would do (default knee 1 s): when every queue is long, the work saved by
  // a local hit shortens every later request's wait, so locality counts for more than a queue a little
  // shorter. Tuned on the Mooncake trace replay (docs/BENCHMARKS.md, "## scheduler").
  double load_bound = 0.5;
  absl::Duration queue_slack = absl::Seconds(2);
  absl::Duration load_knee = absl::Seconds(1);
  // Listen addresses of the daemon: loopback unless given (a deployment passes 0.0.0.0 or a pod IP).
  std::string grpc_address = "127.0.0.1:50070";
  std::string metrics_host = "127.0.0.1";
  int metrics_port = 9470;
  // Mutual TLS and the shared token of the scheduler's gRPC and of the front door's channels to workers
  // (common/grpc_security.h); not of the front door's own faces (HTTP, FrontDoor gRPC), whose callers
  // are users with API keys. Default: neither.
  RpcSecurityOptions security;
  // A plaintext gRPC port with only grpc.health.v1.Health, on the gRPC address's host; -1: off.
  int health_port = -1;
  // When set: "grpc_port=N metrics_port=M http_port=H\n" written here (whole, by a rename) once every
  // listener serves (http_port -1 without a front door). `strata serve` waits on it.
  std::string port_file;
  // A live holder that has sent no KV event for this long while its heartbeat says it sent some is
  // logged (silence is a bug). Default 30 s.
  absl::Duration silence_warning = absl::Seconds(30);

  // The front door (scheduler/frontdoor/): OpenAI-compatible HTTP and the FrontDoor gRPC service. It
  // runs when `model_dir` is set: the directory's tokenizer.json, config.json (context length) and
  // tokenizer_config.json (chat template; a documented fallback without one). No weights are read.
  std::string model_dir;
  // The name clients give as `model`, and workers register as WorkerInfo.model_name. Empty: the base
  // name of model_dir.
  std::string served_model_name;
  std::string http_host = "127.0.0.1";
  // -1: no HTTP front door; 0: any free port (tests). Default 8000.
  int http_port = 8000;
  // HTTP connections (scheduler/frontdoor/http_server.h): open ones at most (each holds a thread: a stream
  // for its whole life) and per client address (0: no cap); past either a new one is answered 503 with
  // Retry-After at once. A request's head must arrive within the header timeout; its body may fall silent
  // for at most the read timeout; a kept-alive connection may idle for the keep-alive timeout.
  int http_max_connections = 1024;
  int http_max_connections_per_address = 256;
  absl::Duration http_header_timeout = absl::Seconds(10);
  absl::Duration http_read_timeout = absl::Seconds(10);
  absl::Duration http_keep_alive_timeout = absl::Seconds(5);
  // Listen address of the FrontDoor gRPC service (proto/frontdoor.proto). Empty: off.
  std::string frontdoor_grpc_address;
  // Lines `key tenant [rps=R burst=B concurrency=C models=a,b]` (scheduler/frontdoor/api_keys.h):
  // requests need `Authorization: Bearer key`, and the tenant is the key's. Empty: no keys; every caller
  // is one caller for the limits, and its tenant follows `prefix_cache_sharing`.
  std::string api_keys_file;
  // Keyless tenancy (above). Default: each client its own prefix cache.
  PrefixCacheSharing prefix_cache_sharing = PrefixCacheSharing::kPerClient;
  // Cached-token counts in responses. Default: shown.
  CacheReport cache_report = CacheReport::kShown;
  // /metrics on the public HTTP port. Default: off (the metrics port serves it).
  HttpMetrics http_metrics = HttpMetrics::kOff;
  // Deadline of a request's Generate call on its worker (the whole stream). Default 10 min.
  absl::Duration request_timeout = absl::Minutes(10);
  // Front-door limits (scheduler/frontdoor/limits.h). Per request: the body (413, never buffered past
  // it; also the front door's gRPC message limit), prompt tokens after the chat template and max_tokens
  // (400). Per API key (the key file can override them): requests per second with a burst, and requests
  // open at once (429). 0: no limit of the server's own. Defaults: 16 MiB bodies; JSON nested at most
  // 32 deep with at most 2 Mi elements (checked as the body arrives, 400); 1 Mi prompt tokens (the
  // model's context still bounds them); 32 Ki max_tokens, which also caps an absent one.
  uint64_t max_request_bytes = 16 << 20;
  int max_json_depth = 32;
  uint64_t max_json_elements = uint64_t{2} << 20;
  int64_t max_prompt_tokens = int64_t{1} << 20;
  int64_t max_completion_tokens = int64_t{32} << 10;
  double rate_limit_rps = 0;
  double rate_limit_burst = 0;
  int64_t max_concurrent_requests_per_key = 0;
};

}  // namespace strata::scheduler

#endif  // STRATA_SCHEDULER_OPTIONS_H_
