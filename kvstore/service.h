// The gRPC face of the store (proto/kvstore.proto): checks and parses requests, calls Store, maps
// results onto replies, times every call. Bad input gets INVALID_ARGUMENT naming the item; nothing in a
// request can crash the daemon. Thread-safe (the store is).
#ifndef STRATA_KVSTORE_SERVICE_H_
#define STRATA_KVSTORE_SERVICE_H_

#include <atomic>
#include <string>

#include "common/log.h"
#include "common/metrics.h"
#include "kvstore/options.h"
#include "kvstore/store.h"
#include "proto/kvstore.grpc.pb.h"

namespace strata::kvstore {

class UcxServer;

struct DataPlane {
  std::string worker_address;
  std::string rkey;  // the arena's (--rkey-scope=arena)

  uint64_t arena_base = 0;
  uint64_t arena_bytes = 0;
  UcxServer* ucx = nullptr;  // registers each granted block (--rkey-scope=grant); outlives the service
};

class KvStoreService final : public proto::KvStore::Service {
 public:
  // `store` and `metrics` outlive the service.
  KvStoreService(const Options& options, Store& store, DataPlane data_plane, MetricsRegistry& metrics);

  // Calls being handled now (for the drain on SIGTERM).
  int in_flight() const { return in_flight_.load(); }

  grpc::Status Connect(grpc::ServerContext*, const proto::ConnectRequest*, proto::ConnectResponse*) override;
  grpc::Status Lookup(grpc::ServerContext*, const proto::LookupRequest*, proto::LookupResponse*) override;
  grpc::Status BeginPut(grpc::ServerContext*, const proto::BeginPutRequest*, proto::BeginPutResponse*) override;
  grpc::Status CommitPut(grpc::ServerContext*, const proto::CommitPutRequest*, proto::CommitPutResponse*) override;
  grpc::Status AbortPut(grpc::ServerContext*, const proto::AbortPutRequest*, proto::AbortPutResponse*) override;
  grpc::Status BeginGet(grpc::ServerContext*, const proto::BeginGetRequest*, proto::BeginGetResponse*) override;
  grpc::Status RenewLease(grpc::ServerContext*, const proto::RenewLeaseRequest*, proto::RenewLeaseResponse*) override;
  grpc::Status EndGet(grpc::ServerContext*, const proto::EndGetRequest*, proto::EndGetResponse*) override;
  grpc::Status Delete(grpc::ServerContext*, const proto::DeleteRequest*, proto::DeleteResponse*) override;
  grpc::Status Stats(grpc::ServerContext*, const proto::StatsRequest*, proto::StatsResponse*) override;

 private:
  Histogram& Latency(const char* op, MetricsRegistry& metrics);
  // OK when the caller may write (Options::writer_identities); else PERMISSION_DENIED naming its
  // certificate, counted and logged at most once a second.
  grpc::Status AuthorizeWrite(const grpc::ServerContext& context, std::string_view op);
  // --rkey-scope=grant: registers the blocks at `offsets` (sizes `bytes`) and ties the registrations to the
  // put or lease `id`; the packed rkeys, in order.
  absl::StatusOr<std::vector<std::string>> GrantRkeys(uint64_t id, absl::Span<const uint64_t> offsets,
                                                      absl::Span<const uint64_t> bytes);

  class CallGuard {
   public:
    explicit CallGuard(std::atomic<int>& count) : count_(count) { ++count_; }
    ~CallGuard() { --count_; }

   private:
    std::atomic<int>& count_;
  };

  std::atomic<int> in_flight_{0};
  const Options options_;
  Store& store_;
  const DataPlane data_plane_;
  Counter* writes_refused_;
  LogThrottle write_refused_log_;
  Histogram *lookup_seconds_, *begin_put_seconds_, *commit_put_seconds_, *begin_get_seconds_, *end_get_seconds_,
      *delete_seconds_;
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_SERVICE_H_
