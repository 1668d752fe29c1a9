// Options of the KV-store daemon. Flags of `strata-kvstore` map onto these fields 1:1 (kvstore/main.cc).
#ifndef STRATA_KVSTORE_OPTIONS_H_
#define STRATA_KVSTORE_OPTIONS_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/rpc_security_options.h"

namespace strata::kvstore {

// When a block reaches the SSD tier.
enum class Persist {
  kWriteBack,     // when DRAM evicts it (default), and on SIGTERM: DRAM-only blocks are lost on kill -9
  kWriteThrough,  // at commit, through the WAL, before the put is acknowledged: every acknowledged block
                  // survives kill -9
};

enum class EvictionPolicyKind { kLru, kS3Fifo };

// How the SSD tier reads blocks.
enum class SsdIo {
  kBuffered,  // through the page cache (default; works on every filesystem)
  kDirect,    // O_DIRECT reads, flushes and compactions: SSD blocks are not cached twice, and blob files
              // are written past the page cache (needs a filesystem with O_DIRECT)
};

// What the rkey of a put's or get's grant reaches (kvstore/ucx_server.h).
enum class RkeyScope {
  kGrant,  // only the granted blocks, until the put or lease ends (default); RDMA transports check it
  kArena,  // the whole arena, for the daemon's life: same-host peers map it as shared memory (faster gets)
};

struct Options {
  // gRPC control plane. Port 0 picks a free port (written to port_file).
  std::string host = "127.0.0.1";
  int port = 7480;
  // The address whose interface the UCX data plane listens on (kvstore/ucx_devices.h); empty: `host`. A
  // wildcard (0.0.0.0) leaves UCX on every interface; so does UCX_NET_DEVICES in the environment, which wins.
  std::string ucx_host;
  // Prometheus /metrics and /healthz over HTTP; 0 picks a free port, -1 disables.
  int metrics_port = 7481;
  // A plaintext gRPC port with only grpc.health.v1.Health (for probes that do neither TLS nor tokens);
  // 0 picks a free port, -1 (default) disables.
  int health_port = -1;
  // Mutual TLS and the shared token of the gRPC port and of the channel to the scheduler
  // (common/grpc_security.h). Default: neither.
  RpcSecurityOptions security;
  // Certificate common names (PeerCommonName) that may write: BeginPut, CommitPut, AbortPut, Delete. Any
  // other caller gets PERMISSION_DENIED for those (reads stay open to every caller that passed the TLS and
  // token checks). Needs mutual TLS. Empty (default): every such caller may write. The chart passes
  // strata-worker: only workers, who sign what they write (worker/prefix/block_mac.h), put blocks.
  std::vector<std::string> writer_identities;
  // When set, written (atomically) once the daemon serves: "grpc_port=N metrics_port=M health_port=H\n".
  std::filesystem::path port_file;

  // DRAM tier: the one registered arena. Rounded up to 2 MiB.
  uint64_t dram_bytes = uint64_t{1} << 30;
  // Largest block a put may reserve (at most dram_bytes).
  uint64_t max_block_bytes = uint64_t{64} << 20;
  EvictionPolicyKind eviction = EvictionPolicyKind::kS3Fifo;

  // SSD tier: a RocksDB (BlobDB) directory. Empty: no SSD tier (DRAM evictions drop blocks).
  std::filesystem::path ssd_dir;
  Persist persist = Persist::kWriteBack;
  // Block bytes the SSD tier may hold; 0: no limit. Past it, blocks only on SSD are dropped, least
  // recently used first (blocks also in DRAM keep their SSD copy).
  uint64_t ssd_bytes = 0;
  SsdIo ssd_io = SsdIo::kBuffered;
  // Write-back: blocks written to the SSD tier are made durable (SsdTier::Sync: the memtables flushed into
  // synced blob files) at least this often; a crash loses at most the blocks written to SSD since, which are then
  // misses, never wrong (kvstore/ssd_tier.h). Write-through ignores it: its commits go through the WAL,
  // so they survive kill -9 at once (power loss once RocksDB flushes a full memtable). 0: only when RocksDB
  // flushes a full memtable, and at shutdown.
  uint32_t ssd_sync_ms = 1000;
  // The SSD tier's read rate, reported to the scheduler, which prices a tier-D hit at the lower of this and
  // the worker's network rate. Not measured by the daemon: the default, 1.0 GB/s, is what sequential
  // O_DIRECT reads of whole blocks measured on the GPU machine's disk (dd: 1.0-1.1 GB/s) and on the dev VM's
  // (dd and fio, 32 MiB reads: 0.96-1.1 GB/s); set this from `fio --rw=read --direct=1 --bs=<block bytes>`
  // on the SSD directory's device. Must be > 0.
  double ssd_read_bytes_per_s = 1e9;

  RkeyScope rkey_scope = RkeyScope::kGrant;

  // An uncommitted put's reservation and an un-ended get's pins are freed after these.
  uint32_t put_ttl_ms = 30'000;
  uint32_t lease_ttl_ms = 30'000;
  // Most keys in one request; larger requests are refused with INVALID_ARGUMENT.
  uint32_t max_batch = 4096;
  // Most block bytes one client connection (gRPC peer) may hold at once, reserved by its uncommitted puts
  // plus pinned by its get leases, so that one client cannot pin the whole arena; past it BeginPut and
  // BeginGet are RESOURCE_EXHAUSTED. 0 (default): no limit (a single-client daemon may use its whole
  // arena); the Helm chart passes half of --dram-bytes.
  uint64_t max_client_bytes = 0;

  // The scheduler replicas to register with (host:port each) and report block events to
  // (kvstore/scheduler_link.h); empty: none. The store serves the same either way.
  std::vector<std::string> scheduler_addresses;
  // Where workers reach this daemon's gRPC, as registered; empty: host:port (the bound port).
  std::string advertise_address;
  // This kvstore's name in the cluster; empty: "kvstore-" + the advertised address.
  std::string holder_id;
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_OPTIONS_H_
