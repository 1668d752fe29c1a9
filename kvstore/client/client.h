// Client of strata-kvstore: batched put and get of many blocks between caller-owned host buffers and
// the daemon's DRAM arena. Control over gRPC (every call with a deadline), bytes over UCX RMA.
//
//   auto client = KvStoreClient::Connect({.address = "10.0.0.5:7480"});
//   (*client)->RegisterMemory(buffer, buffer_bytes);   // once; UCX registration is not per request
//   (*client)->Put({{key, buffer, 2 << 20}});
//   (*client)->Get({{key, buffer, 2 << 20}});
//
// A put writes the blocks into reserved space, flushes, and commits with each block's xxh3-64: the daemon
// publishes the batch only if every checksum matches. A get pins the blocks under a lease, reads them,
// renews the lease while the transfer runs past a third of its TTL, checks every block's checksum
// (verify_reads) and ends the lease. A block that fails the check is reported as not found: a client
// never hands out bytes it has not verified. A dead daemon fails the call (UCX peer error handling);
// the next call reconnects.
//
// Speed: each byte is hashed once per side (xxh3's AVX2 code where the CPU has it, kvstore/checksum.h);
// a block over 2 MiB is read (and written) a 2 MiB chunk at a time, each chunk hashed while still in
// cache. With verify_reads, EndGet is sent without waiting for its reply (the bytes were already copied
// and are checked against the checksum the daemon gave at BeginGet; a lost EndGet is bounded by the
// lease TTL); this client's later Stats, Lookup and Delete wait for those replies first, so they see the
// leases ended.
//
// Thread-safe. The UCX part of a call (RMA, checksums) runs one at a time per client (one UCX worker),
// but the gRPC round trips of calls from several threads overlap: a window of calls in flight on one
// client (threads, or PutAsync/GetAsync) hides the control plane's latency behind other calls' RMA.
#ifndef STRATA_KVSTORE_CLIENT_CLIENT_H_
#define STRATA_KVSTORE_CLIENT_CLIENT_H_

#include <ucp/api/ucp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/block_key.h"
#include "common/grpc_security.h"
#include "proto/kvstore.grpc.pb.h"

namespace strata::kvstore {

// How the client's UCX endpoint learns that the daemon died.
enum class PeerFailure {
  // UCP_ERR_HANDLING_MODE_PEER: UCX detects it (keepalive) and fails every outstanding request. UCX 1.13
  // has no peer-failure support on its shared-memory transports, so on one host this runs over TCP
  // loopback instead of shared memory (here ucx_perftest moves about 1 GB/s against 12 GB/s, and a
  // kvstore get of 2 MiB 1.3 GB/s against 3.5).
  kDetect,
  // UCP_ERR_HANDLING_MODE_NONE: on one host UCX maps the arena's shared memory into the client. A daemon that dies
  // mid-transfer
  // is caught by transfer_timeout (the endpoint is then closed), not by UCX.
  kTimeoutOnly,
};

struct ClientOptions {
  std::string address;  // host:port of the daemon's gRPC endpoint
  // The channel's certificate and token (common/grpc_security.h); default: plaintext, no token.
  std::shared_ptr<const RpcSecurity> security = RpcSecurity::Insecure();
  std::chrono::milliseconds rpc_timeout{5000};
  std::chrono::milliseconds transfer_timeout{60000};  // a batch's RMA phase
  bool verify_reads = true;                           // check the xxh3-64 of every block read
  PeerFailure peer_failure = PeerFailure::kDetect;
  uint32_t max_batch_keys = 1024;  // larger calls are split (also at the daemon's --max-batch)
};

struct PutBlock {
  BlockKey key;
  const void* data = nullptr;  // inside a registered region
  uint64_t size_bytes = 0;
  std::optional<BlockKey> parent;  // the previous block of its chain, if known (eviction prefers leaves)
};
enum class PutOutcome { kStored, kAlreadyPresent };

struct GetBlock {
  BlockKey key;
  void* data = nullptr;  // inside a registered region
  uint64_t capacity_bytes = 0;
};
struct GetOutcome {
  bool found = false;
  proto::Tier tier = proto::TIER_UNSPECIFIED;
  uint64_t size_bytes = 0;
};

class KvStoreClient {
 public:
  static absl::StatusOr<std::unique_ptr<KvStoreClient>> Connect(const ClientOptions& options);
  ~KvStoreClient();
  KvStoreClient(const KvStoreClient&) = delete;
  KvStoreClient& operator=(const KvStoreClient&) = delete;

  // Registers [data, data + bytes) with UCX. Buffers of puts and gets must lie inside a registered
  // region, which must stay valid until UnregisterMemory or the client's destruction.
  absl::Status RegisterMemory(void* data, uint64_t bytes);
  absl::Status UnregisterMemory(void* data);

  // One outcome per block. InvalidArgument: a buffer outside registered memory, a get buffer smaller
  // than the block. Unavailable: the daemon or the transfer failed (nothing is committed).
  absl::StatusOr<std::vector<PutOutcome>> Put(absl::Span<const PutBlock> blocks);
  absl::StatusOr<std::vector<GetOutcome>> Get(absl::Span<const GetBlock> blocks);
  // The same, run on another thread; the buffers must stay valid until the future is ready.
  std::future<absl::StatusOr<std::vector<PutOutcome>>> PutAsync(std::vector<PutBlock> blocks);
  std::future<absl::StatusOr<std::vector<GetOutcome>>> GetAsync(std::vector<GetBlock> blocks);

  absl::StatusOr<proto::LookupResponse> Lookup(absl::Span<const BlockKey> keys);
  absl::StatusOr<uint32_t> Delete(absl::Span<const BlockKey> keys);
  absl::StatusOr<proto::StatsResponse> Stats();

 private:
  struct Region {
    uintptr_t begin, end;
    ucp_mem_h memh;
  };
  explicit KvStoreClient(const ClientOptions& options);
  absl::Status EnsureConnected() ABSL_EXCLUSIVE_LOCKS_REQUIRED(ucx_mutex_);
  void Disconnect() ABSL_EXCLUSIVE_LOCKS_REQUIRED(ucx_mutex_);
  // Progresses until every request is done (and freed) or `limit` passes; false on the latter.
  bool ProgressUntilDone(std::vector<void*>& requests, std::chrono::milliseconds limit)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(ucx_mutex_);
  void ReplaceWorker() ABSL_EXCLUSIVE_LOCKS_REQUIRED(ucx_mutex_);
  absl::StatusOr<ucp_rkey_h> Rkey(const std::string& packed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(ucx_mutex_);
  // The rkey of one granted block: its own (a daemon with --rkey-scope=grant), unpacked for this batch
  // and destroyed by DropBlockRkeys, or else the grant's arena rkey.
  absl::StatusOr<ucp_rkey_h> SlotRkey(const std::string& grant_rkey, const std::string& block_rkey)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(ucx_mutex_);
  void DropBlockRkeys() ABSL_EXCLUSIVE_LOCKS_REQUIRED(ucx_mutex_);
  // Drops the batch's block rkeys when a transfer's scope ends, on every path (under ucx_mutex_).
  class BatchRkeys {
   public:
    explicit BatchRkeys(KvStoreClient& client) : client_(client) {}
    ~BatchRkeys() ABSL_NO_THREAD_SAFETY_ANALYSIS { client_.DropBlockRkeys(); }

   private:
    KvStoreClient& client_;
  };
  absl::StatusOr<ucp_mem_h> FindMemh(const void* data, uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(ucx_mutex_);
  // Waits for every request; renews `lease_id` (if non-zero) as the transfer runs long.
  struct TransferClock {
    std::chrono::steady_clock::time_point start, renewed;
  };
  // `clock` (optional) spans several WaitAll calls of one batch: the transfer timeout and lease renewals
  // count from its start.
  absl::Status WaitAll(std::vector<void*>& requests, uint64_t lease_id, uint32_t lease_ttl_ms,
                       TransferClock* clock = nullptr) ABSL_EXCLUSIVE_LOCKS_REQUIRED(ucx_mutex_);
  // Sends EndGet and returns without its reply; AwaitEndGets waits for every such reply.
  void EndGetAsync(uint64_t lease_id);
  void AwaitEndGets();
  absl::StatusOr<std::vector<PutOutcome>> PutBatch(absl::Span<const PutBlock> blocks);
  absl::StatusOr<std::vector<GetOutcome>> GetBatch(absl::Span<const GetBlock> blocks);

  const ClientOptions options_;
  std::atomic<uint32_t> batch_keys_;  // min(options_.max_batch_keys, the daemon's max_batch)
  std::unique_ptr<proto::KvStore::Stub> stub_;
  absl::Mutex ucx_mutex_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ ABSL_GUARDED_BY(ucx_mutex_) = nullptr;
  ucp_ep_h ep_ ABSL_GUARDED_BY(ucx_mutex_) = nullptr;
  bool ep_failed_ = false;  // set by UCX's error callback, on the thread that progresses the worker
  std::string rkey_packed_ ABSL_GUARDED_BY(ucx_mutex_);
  ucp_rkey_h rkey_ ABSL_GUARDED_BY(ucx_mutex_) = nullptr;
  std::vector<ucp_rkey_h> block_rkeys_ ABSL_GUARDED_BY(ucx_mutex_);  // this batch's (SlotRkey)
  uint64_t arena_base_ ABSL_GUARDED_BY(ucx_mutex_) = 0;
  uint64_t arena_bytes_ ABSL_GUARDED_BY(ucx_mutex_) = 0;
  std::vector<Region> regions_ ABSL_GUARDED_BY(ucx_mutex_);
  uint64_t connection_ ABSL_GUARDED_BY(ucx_mutex_) = 0;  // bumped by every new endpoint
  absl::Mutex end_gets_mutex_;
  int end_gets_in_flight_ ABSL_GUARDED_BY(end_gets_mutex_) = 0;
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_CLIENT_CLIENT_H_
