// strata-kvstore: the KV-store daemon. Flags map 1:1 onto kvstore::Options (kvstore/options.h).
#include <malloc.h>

#include <iostream>
#include <map>

#include "CLI/CLI.hpp"
#include "common/daemon.h"
#include "common/flag_sources.h"
#include "common/grpc_security_flags.h"
#include "common/log.h"
#include "common/size_flags.h"
#include "common/strings.h"
#include "kvstore/daemon.h"

int main(int argc, char** argv) {
  strata::BlockShutdownSignals();
  // RocksDB allocates a buffer per SSD block read and written (MiBs each). glibc serves those with mmap and
  // unmaps them on free, so every one paid a page fault per 4 KiB (about 3x the disk time here); from the
  // heap, freed buffers are reused.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  strata::kvstore::Options options;
  CLI::App app{"strata-kvstore: disaggregated KV-cache store (DRAM + SSD tiers, UCX data plane, gRPC control)"};
  std::string ssd_dir, port_file;
  app.add_option("--host", options.host, "Address to listen on (gRPC and metrics)")->capture_default_str();
  app.add_option("--port", options.port, "gRPC port (0: pick a free one)")->capture_default_str();
  app.add_option("--ucx-host", options.ucx_host,
                 "Address whose interface UCX listens on (default: --host; 0.0.0.0: every interface; "
                 "UCX_NET_DEVICES overrides)");
  app.add_option("--metrics-port", options.metrics_port, "HTTP /metrics and /healthz port (0: pick, -1: off)")
      ->capture_default_str();
  app.add_option("--health-port", options.health_port,
                 "Plaintext gRPC port serving only grpc.health.v1.Health (0: pick, -1: off)")
      ->capture_default_str();
  app.add_option("--port-file", port_file, "Write 'grpc_port=N metrics_port=M health_port=H' here once serving");
  strata::AddRpcSecurityFlags(app, options.security);
  app.add_option("--writer-identity", options.writer_identities,
                 "Certificate common name that may put and delete blocks (repeat for several; needs --tls-*); "
                 "default: any caller that passes the TLS and token checks");
  app.add_option("--dram-bytes", options.dram_bytes, "DRAM arena size (bytes, or with a unit: 40GiB)")->capture_default_str()
      ->transform(strata::ByteSizeFlag());
  app.add_option("--max-block-bytes", options.max_block_bytes, "Largest block accepted (bytes, or 64MiB)")->capture_default_str()
      ->transform(strata::ByteSizeFlag());
  app.add_option("--ssd-bytes", options.ssd_bytes, "SSD tier capacity in block bytes, or with a unit (0: no limit)")
      ->capture_default_str()
      ->transform(strata::ByteSizeFlag());
  app.add_option("--ssd-dir", ssd_dir, "RocksDB directory of the SSD tier, created when missing (none: DRAM only)");
  app.add_option("--ssd-sync-ms", options.ssd_sync_ms,
                 "Blocks written to SSD are made durable at least this often (0: when a memtable fills)")
      ->capture_default_str();
  std::map<std::string, strata::kvstore::Persist> persist_map{
      {"write-back", strata::kvstore::Persist::kWriteBack}, {"write-through", strata::kvstore::Persist::kWriteThrough}};
  app.add_option("--persist", options.persist, "write-back (on eviction) or write-through (at commit)")
      ->transform(CLI::CheckedTransformer(persist_map, CLI::ignore_case))
      ->default_str("write-back");
  std::map<std::string, strata::kvstore::EvictionPolicyKind> eviction_map{
      {"lru", strata::kvstore::EvictionPolicyKind::kLru}, {"s3fifo", strata::kvstore::EvictionPolicyKind::kS3Fifo}};
  app.add_option("--eviction", options.eviction, "DRAM eviction policy: s3fifo or lru")
      ->transform(CLI::CheckedTransformer(eviction_map, CLI::ignore_case))
      ->default_str("s3fifo");
  std::map<std::string, strata::kvstore::SsdIo> io_map{{"buffered", strata::kvstore::SsdIo::kBuffered},
                                                       {"direct", strata::kvstore::SsdIo::kDirect}};
  app.add_option("--ssd-io", options.ssd_io, "SSD reads: buffered (page cache) or direct (O_DIRECT)")
      ->transform(CLI::CheckedTransformer(io_map, CLI::ignore_case))
      ->default_str("buffered");
  app.add_option("--ssd-read-bytes-per-s", options.ssd_read_bytes_per_s,
                 "SSD tier read rate reported to the scheduler (prices tier-D hits; bytes per second, or e.g. "
                 "2GB); measure with fio")
      ->capture_default_str()
      ->transform(strata::ByteRateFlag());
  std::map<std::string, strata::kvstore::RkeyScope> rkey_map{{"arena", strata::kvstore::RkeyScope::kArena},
                                                             {"grant", strata::kvstore::RkeyScope::kGrant}};
  app.add_option("--rkey-scope", options.rkey_scope,
                 "What a grant's rkey reaches: grant (each granted block, until its put or lease ends; checked "
                 "by RDMA transports) or arena (the whole arena, for the daemon's life; same-host shared memory)")
      ->transform(CLI::CheckedTransformer(rkey_map, CLI::ignore_case))
      ->default_str("grant");
  app.add_option("--put-ttl-ms", options.put_ttl_ms, "Uncommitted puts are freed after this")->capture_default_str();
  app.add_option("--lease-ttl-ms", options.lease_ttl_ms, "Un-ended get leases are freed after this")
      ->capture_default_str();
  app.add_option("--max-batch", options.max_batch, "Most keys in one request")->capture_default_str();
  app.add_option("--max-client-bytes", options.max_client_bytes,
                 "Most block bytes one client connection may hold reserved or pinned at once (0: no limit; the chart passes half the arena)")
      ->capture_default_str()
      ->transform(strata::ByteSizeFlag());
  app.add_option("--scheduler", options.scheduler_addresses,
                 "Register with this strata-scheduler (host:port) and report block events to it (repeat, or "
                 "comma-separate, for each replica)")
      ->delimiter(',');
  app.add_option("--advertise-address", options.advertise_address,
                 "Address registered with the scheduler (default: --host and the gRPC port)");
  app.add_option("--holder-id", options.holder_id, "Name in the cluster (default: kvstore-<advertised address>)");
  int drain_ms = 5000;
  app.add_option("--drain-ms", drain_ms, "On SIGTERM, how long in-flight calls may finish")->capture_default_str();
  strata::FlagSources sources(app);
  if (std::optional<int> exit_code = sources.Parse(app, argc, argv)) return *exit_code;
  if (!(options.ssd_read_bytes_per_s > 0)) {
    std::cerr << "strata-kvstore: --ssd-read-bytes-per-s must be > 0 (bytes per second)\n";
    return 1;
  }
  options.ssd_dir = ssd_dir;
  options.port_file = port_file;

  auto daemon = strata::kvstore::KvStoreDaemon::Start(options);
  if (!daemon.ok()) {
    strata::LogError(strata::StrCat("error=start_failed message=\"", daemon.status().message(), "\""));
    std::cerr << "strata-kvstore: " << daemon.status().message() << "\n";
    return 1;
  }
  const int signal_number = strata::WaitForShutdownSignal();
  strata::LogInfo(strata::StrCat("event=shutdown_signal signal=", signal_number));
  (*daemon)->Shutdown(std::chrono::milliseconds(drain_ms));
  return 0;
}
