#include "kvstore/daemon.h"

#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <fstream>
#include <thread>

#include "common/file.h"
#include "common/grpc_security.h"
#include "common/log.h"
#include "common/status.h"
#include "common/strings.h"
#include "absl/strings/str_join.h"
#include "kvstore/ucx_devices.h"

namespace strata::kvstore {
namespace {

// Requests carry keys and checksums only; anything larger is malformed (RESOURCE_EXHAUSTED from gRPC).
constexpr int kMaxRequestBytes = 4 << 20;

absl::Status WritePortFile(const std::filesystem::path& path, int grpc_port, int metrics_port, int health_port) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << "grpc_port=" << grpc_port << " metrics_port=" << metrics_port << " health_port=" << health_port << "\n";
    if (!out) return absl::InternalError(StrCat("--port-file ", path.string(), ": cannot write"));
  }
  std::error_code error;
  std::filesystem::rename(tmp, path, error);
  if (error) return absl::InternalError(StrCat("--port-file ", path.string(), ": ", error.message()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvStoreDaemon>> KvStoreDaemon::Start(const Options& options) {
  std::unique_ptr<KvStoreDaemon> daemon(new KvStoreDaemon());
  if (options.max_block_bytes == 0) return absl::InvalidArgumentError("--max-block-bytes must be positive");
  daemon->options_ = options;
  // A block never exceeds the arena.
  daemon->options_.max_block_bytes = std::min(options.max_block_bytes, options.dram_bytes);
  STRATA_ASSIGN_OR_RETURN(std::shared_ptr<const RpcSecurity> security, RpcSecurity::Load(options.security));
  if (!options.writer_identities.empty() && !security->tls()) {
    return absl::InvalidArgumentError(
        "--writer-identity needs mutual TLS (--tls-cert, --tls-key, --tls-ca): without it no caller has a "
        "certificate identity");
  }
  STRATA_RETURN_IF_ERROR(scheduler::CheckSchedulerAddresses(options.scheduler_addresses));
  CheckMemlockLimit(options.dram_bytes);
  // UCX listens on the interface of --ucx-host (default --host) only (ucx_devices.h), where it names one.
  const std::optional<std::string> net_devices =
      UcxNetDevicesFor(options.ucx_host.empty() ? options.host : options.ucx_host);
  LogInfo(StrCat("event=ucx_net_devices devices=", net_devices.value_or("ucx_default"),
                 net_devices.has_value() ? " source=--host" : " source=UCX_NET_DEVICES_or_all"));
  STRATA_ASSIGN_OR_RETURN(daemon->ucx_, UcxServer::Start(options.dram_bytes, options.rkey_scope, net_devices));
  std::unique_ptr<SsdTier> ssd;
  if (!options.ssd_dir.empty()) {
    STRATA_RETURN_IF_ERROR(CreateDirectories(options.ssd_dir, "--ssd-dir"));
    STRATA_ASSIGN_OR_RETURN(ssd, SsdTier::Open(options.ssd_dir, options.ssd_io, options.persist));
  } else if (options.persist == Persist::kWriteThrough) {
    return absl::InvalidArgumentError("--persist=write-through needs --ssd-dir");
  }
  STRATA_ASSIGN_OR_RETURN(daemon->store_,
                          Store::Create(daemon->options_, daemon->ucx_->arena(), daemon->ucx_->arena_bytes(),
                                        std::move(ssd), daemon->registry_,
                                        options.scheduler_addresses.empty() ? nullptr : &daemon->batcher_));
  DataPlane data_plane{daemon->ucx_->worker_address(), daemon->ucx_->rkey(),
                       reinterpret_cast<uint64_t>(daemon->ucx_->arena()), daemon->ucx_->arena_bytes(),
                       daemon->ucx_.get()};
  UcxServer* ucx = daemon->ucx_.get();
  daemon->registry_.AddGaugeCallback("strata_kvstore_block_rkeys",
                                     "Blocks registered for one put or get each (--rkey-scope=grant)", {},
                                     [ucx] { return static_cast<double>(ucx->block_rkeys()); });
  daemon->service_ =
      std::make_unique<KvStoreService>(daemon->options_, *daemon->store_, std::move(data_plane), daemon->registry_);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(StrCat(options.host, ":", options.port), security->ServerCredentials(), &daemon->grpc_port_);
  builder.SetMaxReceiveMessageSize(kMaxRequestBytes);
  builder.RegisterService(daemon->service_.get());
  daemon->server_ = builder.BuildAndStart();
  if (!daemon->server_ || daemon->grpc_port_ == 0) {
    return absl::UnavailableError(
        StrCat("gRPC: cannot listen on ", options.host, ":", options.port, " (address in use?)"));
  }
  KvStoreDaemon* raw = daemon.get();
  if (options.metrics_port >= 0) {
    STRATA_ASSIGN_OR_RETURN(daemon->metrics_,
                            MetricsHttpServer::Start(options.host, options.metrics_port, daemon->registry_,
                                                     [raw] { return raw->serving_.load(); }));
  }
  if (options.health_port >= 0) {
    STRATA_ASSIGN_OR_RETURN(daemon->health_port_,
                            HealthPortServer::Start(StrCat(options.host, ":", daemon->grpc_port_), options.health_port));
  }
  daemon->serving_ = true;
  if (!options.scheduler_addresses.empty()) {
    SchedulerLinkOptions link;
    link.scheduler_addresses = options.scheduler_addresses;
    link.security = security;
    link.advertise_address = options.advertise_address.empty() ? StrCat(options.host, ":", daemon->grpc_port_)
                                                                : options.advertise_address;
    link.holder_id = options.holder_id.empty() ? StrCat("kvstore-", link.advertise_address) : options.holder_id;
    // Capacities in blocks of the largest size (the store knows bytes, not blocks); informational.
    const uint64_t block_bytes = std::max<uint64_t>(1, daemon->options_.max_block_bytes);
    link.dram_blocks = std::max<uint64_t>(1, daemon->ucx_->arena_bytes() / block_bytes);
    if (!options.ssd_dir.empty()) {
      link.ssd_blocks = options.ssd_bytes > 0 ? options.ssd_bytes / block_bytes : uint64_t{1} << 32;
      link.ssd_read_bytes_per_s = options.ssd_read_bytes_per_s;
    }
    LogInfo(StrCat("event=scheduler_link scheduler=", absl::StrJoin(link.scheduler_addresses, ","), " holder_id=", link.holder_id,
                   " address=", link.advertise_address));
    daemon->link_ = std::make_unique<SchedulerLink>(std::move(link), *daemon->store_, daemon->batcher_,
                                                    daemon->registry_);
  }
  if (!options.port_file.empty()) {
    STRATA_RETURN_IF_ERROR(
        WritePortFile(options.port_file, daemon->grpc_port_, daemon->metrics_port(), daemon->health_port()));
  }
  LogInfo(StrCat("event=kvstore_serving grpc=", options.host, ":", daemon->grpc_port_,
                 " metrics_port=", daemon->metrics_port(), " health_port=", daemon->health_port(),
                 " security=", security->Describe(), " dram_bytes=", daemon->ucx_->arena_bytes(),
                 " rkey_scope=", options.rkey_scope == RkeyScope::kGrant ? "grant" : "arena",
                 " ssd_dir=", options.ssd_dir.string(),
                 " persist=", options.persist == Persist::kWriteThrough ? "write-through" : "write-back",
                 " ssd_sync_ms=", options.ssd_sync_ms, " max_client_bytes=",
                 daemon->store_->max_client_bytes(),
                 " eviction=", EvictionPolicyName(options.eviction)));
  return daemon;
}

void KvStoreDaemon::Shutdown(std::chrono::milliseconds drain) {
  if (!server_) return;
  link_.reset();  // deregisters: the scheduler stops routing fetches here first
  serving_ = false;
  server_->GetHealthCheckService()->SetServingStatus(false);
  if (health_port_ != nullptr) health_port_->SetServing(false);
  // Let the calls under way finish (each is short: no call waits on a client), then stop. gRPC's own
  // Shutdown(deadline) also waits out idle client connections, so it gets only a short deadline.
  const auto deadline = std::chrono::steady_clock::now() + drain;
  while (service_->in_flight() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  server_->Wait();
  server_.reset();
  // No more puts: keep the hot set (write-back's DRAM-only blocks) on SSD, within what is left of the drain.
  store_->PersistDram(deadline);
  LogInfo("event=kvstore_drained");
}

KvStoreDaemon::~KvStoreDaemon() {
  Shutdown(std::chrono::milliseconds(0));
  // Members go in reverse order: metrics, service, store (and its SSD tier), UCX, arena.
  metrics_.reset();
}

}  // namespace strata::kvstore
