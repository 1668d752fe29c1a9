#include "worker/service/worker_server.h"

#include <fstream>

#include "absl/strings/str_format.h"
#include "common/byte_size.h"
#include "common/grpc_security.h"
#include "common/log.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "common/strings.h"
#include "worker/engine/cpu_backend.h"
#include "worker/engine/cuda_backend.h"

namespace strata::worker {
namespace {

using Clock = std::chrono::steady_clock;

// The address clients reach: the advertised one, else the bind address with the bound port (a wildcard
// host is replaced by loopback, which is right only on one machine: clusters pass --advertise-address).
std::string AdvertiseAddress(const WorkerOptions& options, int port) {
  if (!options.advertise_address.empty()) return options.advertise_address;
  std::string host = options.grpc_address.substr(0, options.grpc_address.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]") host = "127.0.0.1";
  return StrCat(host, ":", port);
}

// The workers' KV MAC key: --kv-mac-key-file, or a random one for this process alone.
absl::StatusOr<std::shared_ptr<const BlockMac>> LoadMacKey(const WorkerOptions& options) {
  if (options.kv_mac_key_file.empty()) {
    LogWarning(StrCat("event=kv_mac_key source=generated effect=\"blocks this worker writes verify only on this "
                      "worker (its kvstore blocks are misses elsewhere); give every worker the same "
                      "--kv-mac-key-file\""));
    return std::make_shared<const BlockMac>(BlockMac::Generate());
  }
  absl::StatusOr<BlockMac> mac = BlockMac::FromFile(options.kv_mac_key_file);
  if (!mac.ok()) return absl::Status(mac.status().code(), StrCat("--kv-mac-key-file: ", mac.status().message()));
  LogInfo(StrCat("event=kv_mac_key source=file path=", options.kv_mac_key_file.string()));
  return std::make_shared<const BlockMac>(*std::move(mac));
}

// Bytes of the model's weight files, for the log line said before they are read.
uint64_t WeightFileBytes(const std::filesystem::path& dir) {
  uint64_t bytes = 0;
  std::error_code error;
  for (const std::filesystem::directory_entry& entry : std::filesystem::directory_iterator(dir, error)) {
    if (entry.path().extension() == ".safetensors") bytes += entry.file_size(error);
  }
  return bytes;
}

// " bytes=B seconds=S gbps=R" of a step that moved `bytes` in `seconds` (GB/s, 10^9 bytes a second).
std::string SizeAndRate(uint64_t bytes, double seconds) {
  return absl::StrFormat(" bytes=%d size=\"%s\" seconds=%.3f gbps=%.3f", bytes, FormatBytes(bytes), seconds,
                         seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0);
}

double SecondsSince(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerServer>> WorkerServer::Start(const WorkerOptions& options) {
  std::unique_ptr<WorkerServer> server(new WorkerServer());
  WorkerServer& s = *server;
  s.options_ = options;
  if (options.loop.block_tokens == 0) return absl::InvalidArgumentError("--block-tokens must be > 0");
  STRATA_RETURN_IF_ERROR(scheduler::CheckSchedulerAddresses(options.scheduler_addresses));
  if (options.loop.prefill_chunk_tokens <= 0 || options.loop.step_token_budget <= 0 ||
      options.loop.max_running_requests <= 0 || options.loop.max_queued_requests < 0) {
    return absl::InvalidArgumentError(
        "--prefill-chunk-tokens, --step-token-budget and --max-running-requests must be > 0");
  }
  // Before the model loads: a wrong certificate or token file is reported at once.
  STRATA_ASSIGN_OR_RETURN(std::shared_ptr<const RpcSecurity> security, RpcSecurity::Load(options.security));
  if (!options.kv_mac_key_file.empty() || options.host_cache_bytes > 0 || !options.kvstores.empty()) {
    STRATA_ASSIGN_OR_RETURN(s.mac_, LoadMacKey(options));
  }
  ServedModel served;
  served.name = options.served_model_name;
  if (served.name.empty()) {
    served.name = std::filesystem::path(options.model_dir).lexically_normal().filename().string();
    if (served.name.empty()) served.name = std::filesystem::path(options.model_dir).parent_path().filename().string();
  }
  s.metrics_ = std::make_unique<WorkerMetrics>(s.registry_, served.name);

  // Silence is a bug: a large model takes minutes to read, fingerprint and load, so each step is logged
  // as it starts and with its size and rate as it ends.
  const uint64_t weight_file_bytes = WeightFileBytes(options.model_dir);
  LogInfo(StrCat("event=model_open_started dir=", options.model_dir.string(), " weight_file_bytes=", weight_file_bytes,
                 " size=\"", FormatBytes(weight_file_bytes), "\""));
  Clock::time_point step_start = Clock::now();
  // Opening maps the weights and checks them against config.json; the fingerprint then reads every byte
  // (the disk's rate on a cold page cache).
  STRATA_ASSIGN_OR_RETURN(model::Model model, model::OpenModel(options.model_dir));
  s.model_ = std::make_unique<model::Model>(std::move(model));
  const uint64_t weight_bytes = s.model_->checkpoint.total_bytes();
  LogInfo(StrCat("event=model_open", SizeAndRate(weight_bytes, SecondsSince(step_start)),
                 " tensors=", s.model_->checkpoint.tensors().size(), " fingerprint=", s.model_->fingerprint.Hex()));
  if (options.backend == BackendKind::kAuto) {
    std::string reason;
    s.options_.backend = engine::CudaBackendAvailable(&reason) ? BackendKind::kCuda : BackendKind::kCpu;
    LogInfo(StrCat("event=backend_chosen backend=", s.options_.backend == BackendKind::kCuda ? "cuda" : "cpu",
                   s.options_.backend == BackendKind::kCuda ? "" : StrCat(" reason=\"", reason, "\"")));
  }
  const BackendKind backend_kind = s.options_.backend;
  std::unique_ptr<engine::Backend> backend;
  if (backend_kind == BackendKind::kCuda) {
    STRATA_ASSIGN_OR_RETURN(backend, engine::CreateCudaBackend({.dtype = options.cuda_dtype}));
  } else {
    backend = engine::CreateCpuBackend({.threads = options.threads});
  }
  // Paged KV: every request's sequence takes blocks of one pool (the key scheme's blocks), and tier G
  // keeps finished sequences' blocks in it.
  engine::EngineOptions engine_options{.mini_sequence_tokens = options.mini_sequence_tokens};
  engine_options.kv_block_tokens = options.loop.block_tokens;
  engine_options.kv_pool_reserve_tokens = options.loop.step_token_budget + options.loop.prefill_chunk_tokens;
  if (options.kv_pool_bytes > 0 || backend_kind == BackendKind::kCpu) {
    engine_options.kv_pool_bytes =
        static_cast<int64_t>(options.kv_pool_bytes > 0 ? options.kv_pool_bytes : kDefaultCpuKvPoolBytes);
  } else {
    engine_options.kv_pool_memory_fraction = options.gpu_memory_fraction;
  }
  step_start = Clock::now();
  STRATA_ASSIGN_OR_RETURN(s.engine_, engine::Engine::Create(*s.model_, std::move(backend), engine_options));
  LogInfo(StrCat("event=model_load backend=", s.engine_->backend_name(), SizeAndRate(weight_bytes, SecondsSince(step_start)),
                 " kv_pool_blocks=", s.engine_->pool()->num_blocks()));
  const model::ModelConfig& config = s.engine_->config();

  served.key_context.model_fingerprint = s.model_->fingerprint.digest;
  served.key_context.block_tokens = options.loop.block_tokens;
  served.key_context.kv_dtype = s.engine_->kv_dtype();
  served.vocab_size = config.vocab_size;
  served.max_context_tokens = config.max_position_embeddings;
  if (options.max_context_tokens > 0) {
    served.max_context_tokens = std::min(served.max_context_tokens, options.max_context_tokens);
  }
  served.backend = std::string(s.engine_->backend_name());
  for (int64_t id : config.eos_token_ids) served.eos_token_ids.push_back(static_cast<int32_t>(id));
  const uint64_t block_bytes = static_cast<uint64_t>(s.engine_->KvPayloadBytes(options.loop.block_tokens));

  STRATA_RETURN_IF_ERROR(s.Calibrate());

  WorkerServer* raw = server.get();
  s.kv_pool_blocks_ = s.engine_->pool()->num_blocks();
  s.registry_.AddGaugeCallback("strata_worker_kv_pool_blocks", "Blocks of the paged KV pool", {},
                               [raw] { return static_cast<double>(raw->kv_pool_blocks_); });
  // The scheduler sees each block at the worker's fastest tier: in G, else in H, else gone. Both caches
  // report on the engine thread; each filters its events by the other's contents.
  auto report = [raw](auto&& send) {
    if (scheduler::HolderAgent* agent = raw->events_to_.load()) send(*agent);
  };
  auto in_gpu = [raw](const BlockKey& key) { return raw->gpu_cache_ != nullptr && raw->gpu_cache_->Contains(key); };
  auto in_host = [raw](const BlockKey& key) { return raw->host_cache_ != nullptr && raw->host_cache_->Contains(key); };
  if (options.gpu_cache == WorkerOptions::GpuCache::kOn) {
    s.gpu_cache_ = std::make_unique<GpuBlockCache>(
        *s.engine_->pool(),
        [report](absl::Span<const BlockKey> keys) {
          report([&](scheduler::HolderAgent& agent) { agent.Stored(proto::TIER_GPU, keys); });
        },
        [report, in_host](absl::Span<const BlockKey> keys) {
          // A block that leaves G for H is STORED at H; one that leaves G only is gone.
          std::vector<BlockKey> moved, gone;
          for (const BlockKey& key : keys) (in_host(key) ? moved : gone).push_back(key);
          report([&](scheduler::HolderAgent& agent) {
            if (!moved.empty()) agent.Stored(proto::TIER_HOST, moved);
            if (!gone.empty()) agent.Evicted(gone);
          });
        });
    s.registry_.AddGaugeCallback("strata_worker_gpu_cache_blocks", "Blocks kept in tier G (the KV pool)", {},
                                 [raw] { return static_cast<double>(raw->gpu_cache_->blocks()); });
  }
  if (options.host_cache_bytes > 0 || !options.kvstores.empty()) {
    // Tier H's payloads and those in flight to and from the kvstores, in one region: page-locked on a GPU
    // (straight DMA to and from the pool), registered with UCX by the kvstore tier (no staging copies).
    const uint64_t region_bytes = options.host_cache_bytes + options.kvstore_staging_bytes;
    absl::StatusOr<std::shared_ptr<std::byte>> region = s.engine_->AllocateHostBytes(region_bytes);
    if (!region.ok()) {
      return absl::ResourceExhaustedError(StrCat("worker: cannot allocate ", region_bytes,
                                                 " bytes of host memory for KV payloads (--host-cache-bytes + "
                                                 "--kvstore-staging-bytes): ", region.status().message()));
    }
    s.payloads_ = std::make_shared<PayloadPool>(HostRegion{region->get(), region_bytes, *region}, block_bytes);
    s.registry_.AddGaugeCallback("strata_worker_payload_slots_in_use",
                                 "Block payload slots of host memory in use (tier H, transfers in flight)", {},
                                 [raw] { return static_cast<double>(raw->payloads_->slots_in_use()); });
    s.registry_.AddGaugeCallback("strata_worker_payload_slot_misses_total",
                                 "Block payloads not made because every slot was taken (fewer blocks fetched or "
                                 "written through; raise --host-cache-bytes or --kvstore-staging-bytes)",
                                 {}, [raw] { return static_cast<double>(raw->payloads_->misses()); });
  }
  if (options.host_cache_bytes > 0) {
    // Blocks that G holds are G's to report.
    auto outside_gpu = [in_gpu](absl::Span<const BlockKey> keys) {
      std::vector<BlockKey> out;
      for (const BlockKey& key : keys) {
        if (!in_gpu(key)) out.push_back(key);
      }
      return out;
    };
    HostCacheListener listener;
    listener.stored = [report, outside_gpu](absl::Span<const BlockKey> keys) {
      const std::vector<BlockKey> host_only = outside_gpu(keys);
      if (!host_only.empty()) report([&](scheduler::HolderAgent& agent) { agent.Stored(proto::TIER_HOST, host_only); });
    };
    listener.evicted = [report, outside_gpu](absl::Span<const BlockKey> keys) {
      const std::vector<BlockKey> gone = outside_gpu(keys);
      if (!gone.empty()) report([&](scheduler::HolderAgent& agent) { agent.Evicted(gone); });
    };
    s.host_cache_ = std::make_unique<HostBlockCache>(options.host_cache_bytes, std::move(listener));
    s.registry_.AddGaugeCallback("strata_worker_host_cache_bytes", "Payload bytes in tier H", {},
                                 [raw] { return static_cast<double>(raw->host_cache_->bytes()); });
    s.registry_.AddGaugeCallback("strata_worker_host_cache_blocks", "Blocks in tier H", {},
                                 [raw] { return static_cast<double>(raw->host_cache_->blocks()); });
    const double host_bytes = static_cast<double>(options.host_cache_bytes);
    s.registry_.AddGaugeCallback(
        "strata_worker_host_cache_usage", "Fraction of tier H (--host-cache-bytes) holding blocks", {},
        [raw, host_bytes] { return static_cast<double>(raw->host_cache_->bytes()) / host_bytes; });
  }
  if (!options.kvstores.empty()) {
    KvStoreTierOptions kv;
    kv.security = security;
    kv.addresses = options.kvstores;
    kv.block_bytes = block_bytes;
    kv.mac = s.mac_;
    kv.payloads = s.payloads_;
    kv.peer_failure = options.kvstore_peer_failure;
    STRATA_ASSIGN_OR_RETURN(s.kvstore_, KvStoreTier::Create(kv, s.metrics_->kvstore_tier()));
    if (options.kvstore_fetch == WorkerOptions::KvstoreFetch::kAuto) {
      // Until it has measured its own prefills: the calibration; its fetches it measures first.
      s.fetch_policy_ = std::make_unique<FetchPolicy>(FetchPolicyOptions{
          .prefill_s_per_token = s.prefill_s_per_token_,
          .fetch_bytes_per_s = std::min(options.network_bytes_per_s, options.host_to_gpu_bytes_per_s)});
    }
  }
  s.loop_ = std::make_unique<EngineLoop>(
      s.engine_.get(), options.loop, served.key_context,
      PrefixCache::Tiers{.gpu = s.gpu_cache_.get(),
                         .host = s.host_cache_.get(),
                         .kvstore = s.kvstore_.get(),
                         .payloads = s.payloads_.get(),
                         .fetch_policy = s.fetch_policy_.get(),
                         .mac = s.mac_.get(),
                         .host_mac_failures = &s.metrics_->kv_mac_failures_host},
      s.metrics_.get());
  s.registry_.AddGaugeCallback("strata_worker_queue_depth", "Requests admitted, not yet running", {},
                               [raw] { return static_cast<double>(raw->loop_->Load().queued_requests); });
  s.registry_.AddGaugeCallback("strata_worker_running_requests", "Requests in the batch", {},
                               [raw] { return static_cast<double>(raw->loop_->Load().running_requests); });
  s.registry_.AddGaugeCallback(
      "strata_worker_kv_pool_usage",
      "Fraction of the KV pool's blocks in use: running sequences and tier G's cache (vLLM's kv_cache_usage_perc)", {},
      [raw] {
        const uint64_t free = raw->loop_->Load().kv_pool_free_blocks;
        return raw->kv_pool_blocks_ <= 0 ? 0.0 : 1.0 - static_cast<double>(free) / static_cast<double>(raw->kv_pool_blocks_);
      });
  s.loop_->Start();
  const ServedModel served_copy = served;
  s.service_ = std::make_unique<WorkerService>(std::move(served), s.loop_.get(), s.metrics_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.grpc_address, security->ServerCredentials(), &s.grpc_port_);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a second worker on this port is an error
  builder.SetMaxReceiveMessageSize(64 << 20);  // a million-token prompt is ~5 MB of ids
  // The front door pings every 2 s to notice a partition (scheduler/frontdoor/worker_proxy.cc); gRPC's
  // default would answer that with GOAWAY (too_many_pings) during a long prefill that sends nothing.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.RegisterService(s.service_.get());
  s.server_ = builder.BuildAndStart();
  if (s.server_ == nullptr || s.grpc_port_ == 0) {
    return absl::UnavailableError(
        StrCat("worker: cannot listen for gRPC on ", options.grpc_address, " (address in use or not local?)"));
  }
  if (options.metrics_port >= 0) {
    STRATA_ASSIGN_OR_RETURN(s.metrics_http_, MetricsHttpServer::Start(options.metrics_host, options.metrics_port,
                                                                       s.registry_, [raw] { return raw->serving_.load(); }));
  }
  const std::string advertise = AdvertiseAddress(options, s.grpc_port_);
  const std::string worker_id = options.worker_id.empty() ? StrCat("worker-", advertise) : options.worker_id;

  if (!options.scheduler_addresses.empty()) {
    scheduler::HolderAgentOptions agent;
    agent.scheduler_addresses = options.scheduler_addresses;
    agent.security = security;
    agent.metrics = &s.registry_;
    proto::RegisterRequest& r = agent.registration;
    r.set_holder_id(worker_id);
    r.set_kind(proto::HOLDER_KIND_WORKER);
    r.set_address(advertise);
    proto::KeyScheme* scheme = r.mutable_key_scheme();
    scheme->set_version(kBlockKeySchemeVersion);
    scheme->set_block_tokens(options.loop.block_tokens);
    scheme->set_model_fingerprint(std::string(served_copy.key_context.model_fingerprint.begin(),
                                              served_copy.key_context.model_fingerprint.end()));
    scheme->set_kv_dtype(std::string(DTypeName(served_copy.key_context.kv_dtype)));
    proto::WorkerInfo* info = r.mutable_worker();
    info->set_gpu_kv_blocks(static_cast<uint64_t>(s.kv_pool_blocks_));  // tier G: the paged KV pool
    info->set_host_kv_blocks(block_bytes > 0 ? options.host_cache_bytes / block_bytes : 0);
    info->set_block_bytes(block_bytes);
    info->set_prefill_linear_s_per_token(s.prefill_s_per_token_);
    info->set_prefill_quadratic_s_per_token2(0);  // not measured: the linear rate was taken at one length
    info->set_host_to_gpu_bytes_per_s(options.host_to_gpu_bytes_per_s);
    info->set_network_bytes_per_s(options.network_bytes_per_s);
    info->set_decode_tokens_per_s(s.decode_tokens_per_s_);
    info->set_model_name(served_copy.name);
    for (const std::string& kvstore : options.kvstores) info->add_kvstores(kvstore);
    scheduler::HolderAgentCallbacks callbacks;
    callbacks.inventory = [raw] {
      scheduler::TierInventory inventory;
      if (raw->gpu_cache_ != nullptr) inventory.emplace_back(proto::TIER_GPU, raw->gpu_cache_->Keys());
      if (raw->host_cache_ != nullptr) {
        std::vector<BlockKey> host_only;
        for (const BlockKey& key : raw->host_cache_->Keys()) {
          if (raw->gpu_cache_ == nullptr || !raw->gpu_cache_->Contains(key)) host_only.push_back(key);
        }
        inventory.emplace_back(proto::TIER_HOST, std::move(host_only));
      }
      return inventory;
    };
    callbacks.load = [raw] {
      const LoadSnapshot load = raw->loop_->Load();
      proto::LoadReport report;
      report.set_queued_prefill_tokens(load.queued_prefill_tokens);
      report.set_running_tokens(load.running_tokens);
      report.set_running_requests(load.running_requests);
      // The worker's own estimate of a new request's wait: the prefill queued ahead of it at the measured
      // rate (decode steps interleaved with it are not counted).
      report.set_queue_wait_s(static_cast<double>(load.queued_prefill_tokens) * raw->prefill_s_per_token_);
      return report;
    };
    s.agent_ = std::make_unique<scheduler::HolderAgent>(std::move(agent), std::move(callbacks));
    s.events_to_ = s.agent_.get();
    s.agent_->Start();
  }

  if (options.health_port >= 0) {
    STRATA_ASSIGN_OR_RETURN(s.health_port_, HealthPortServer::Start(options.grpc_address, options.health_port));
  }
  s.server_->GetHealthCheckService()->SetServingStatus(true);
  s.serving_ = true;
  LogInfo(StrCat("event=worker_started grpc_port=", s.grpc_port_, " metrics_port=", s.metrics_port(),
                 " health_port=", s.health_port(), " security=", security->Describe(),
                 " worker_id=", worker_id, " address=", advertise, " model=", served_copy.name,
                 " fingerprint=", s.model_->fingerprint.Hex(), " backend=", served_copy.backend,
                 " block_tokens=", options.loop.block_tokens, " block_bytes=", block_bytes,
                 " max_context_tokens=", served_copy.max_context_tokens,
                 " prefill_s_per_token=", s.prefill_s_per_token_, " decode_tokens_per_s=", s.decode_tokens_per_s_,
                 " kvstores=", options.kvstores.size(),
                 " scheduler=", options.scheduler_addresses.empty() ? "none" : absl::StrJoin(options.scheduler_addresses, ",")));
  if (!options.port_file.empty()) {
    std::ofstream out(options.port_file);
    out << "grpc_port=" << s.grpc_port_ << " metrics_port=" << s.metrics_port() << " health_port=" << s.health_port()
        << "\n";
    if (!out) return absl::UnavailableError(StrCat(options.port_file, ": cannot write the port file"));
  }
  return server;
}

absl::Status WorkerServer::Calibrate() {
  prefill_s_per_token_ = options_.prefill_s_per_token;
  decode_tokens_per_s_ = options_.decode_tokens_per_s;
  if (prefill_s_per_token_ > 0 && decode_tokens_per_s_ > 0) return absl::OkStatus();
  // A short prefill and a few decode steps of arbitrary tokens, after one warm-up pass: the rates that
  // placement prices with. One length only, so no quadratic term; on a loaded machine they read slow.
  const model::ModelConfig& config = engine_->config();
  constexpr int64_t kDecodeSteps = 8;
  const int64_t tokens =
      std::max<int64_t>(1, std::min(options_.calibration_tokens, config.max_position_embeddings - kDecodeSteps - 1));
  std::vector<int32_t> ids(static_cast<size_t>(tokens));
  for (int64_t i = 0; i < tokens; ++i) ids[i] = static_cast<int32_t>((i * 7 + 3) % config.vocab_size);
  const int64_t last = tokens - 1, first = 0;
  {
    STRATA_ASSIGN_OR_RETURN(engine::Sequence warm, engine_->NewSequence(tokens));
    STRATA_RETURN_IF_ERROR(engine_->Forward(warm, ids, {&last, 1}).status());
  }
  STRATA_ASSIGN_OR_RETURN(engine::Sequence sequence, engine_->NewSequence(tokens + kDecodeSteps));
  auto start = Clock::now();
  STRATA_RETURN_IF_ERROR(engine_->Forward(sequence, ids, {&last, 1}).status());
  const double prefill_s = std::chrono::duration<double>(Clock::now() - start).count();
  start = Clock::now();
  for (int64_t i = 0; i < kDecodeSteps; ++i) {
    STRATA_RETURN_IF_ERROR(engine_->Forward(sequence, {&ids[i], 1}, {&first, 1}).status());
  }
  const double decode_s = std::chrono::duration<double>(Clock::now() - start).count();
  if (prefill_s_per_token_ <= 0) prefill_s_per_token_ = std::max(1e-9, prefill_s / static_cast<double>(tokens));
  if (decode_tokens_per_s_ <= 0) decode_tokens_per_s_ = kDecodeSteps / std::max(1e-9, decode_s);
  LogInfo(absl::StrFormat("event=calibration prefill_tokens=%d prefill_seconds=%.4f prefill_tokens_per_s=%.1f "
                          "decode_steps=%d decode_seconds=%.4f decode_tokens_per_s=%.1f",
                          tokens, prefill_s, static_cast<double>(tokens) / std::max(1e-9, prefill_s), kDecodeSteps,
                          decode_s, kDecodeSteps / std::max(1e-9, decode_s)));
  return absl::OkStatus();
}

void WorkerServer::Shutdown(std::chrono::milliseconds drain) {
  if (shut_down_.exchange(true)) return;
  serving_ = false;
  if (server_ != nullptr) server_->GetHealthCheckService()->SetServingStatus(false);
  if (health_port_ != nullptr) health_port_->SetServing(false);
  if (loop_ != nullptr) loop_->StopAccepting();
  // Leave placement first (deregister), so that the front door stops sending requests we would refuse,
  // then let the running ones finish.
  if (agent_ != nullptr) {
    events_to_ = nullptr;
    agent_->Stop();
  }
  if (loop_ != nullptr && !loop_->WaitIdle(drain)) LogWarning("event=drain_timeout effect=requests_cancelled");
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  if (loop_ != nullptr) loop_->Stop();
  if (server_ != nullptr) LogInfo("event=worker_stopped");  // not after a start that failed
}

WorkerServer::~WorkerServer() {
  Shutdown(std::chrono::milliseconds(0));
  metrics_http_.reset();
  agent_.reset();
  server_.reset();
  loop_.reset();
  kvstore_.reset();
}

}  // namespace strata::worker
