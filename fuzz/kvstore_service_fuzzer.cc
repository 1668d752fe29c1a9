// Every request handler of the kvstore's gRPC service (kvstore/service.h), called through an in-process
// gRPC server over a real Store (DRAM arena and RocksDB SSD tier in a scratch directory). An input is a
// sequence of calls (fuzz_input.h): a method byte, then the request's protobuf bytes. One more "method"
// plays the worker's part of a put: it writes the blocks that the last BeginPut reserved and commits them
// with their true checksums, so sequences reach published blocks, evictions to SSD and gets.
//
// Properties: no handler crashes the daemon, whatever the bytes; every block a get hands out has, in the
// arena, the bytes its checksum says (no block is served with wrong bytes).
#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "common/metrics.h"
#include "fuzz/fuzz_input.h"
#include "kvstore/checksum.h"
#include "kvstore/service.h"
#include "kvstore/ssd_tier.h"
#include "kvstore/store.h"
#include "proto/kvstore.grpc.pb.h"

namespace strata::kvstore {
namespace {

constexpr uint64_t kArenaBytes = 1 << 20;
constexpr uint64_t kMaxBlockBytes = 64 << 10;

struct Daemon {
  Daemon() : arena(kArenaBytes) {
    Options options;
    options.dram_bytes = kArenaBytes;
    options.max_block_bytes = kMaxBlockBytes;
    options.max_batch = 64;
    auto ssd = SsdTier::Open(fuzz::ScratchDir() / "ssd", SsdIo::kBuffered);
    STRATA_FUZZ_ASSERT(ssd.ok());
    auto created = Store::Create(options, arena.data(), arena.size(), *std::move(ssd), metrics);
    STRATA_FUZZ_ASSERT(created.ok());
    store = *std::move(created);
    service = std::make_unique<KvStoreService>(
        options, *store, DataPlane{"worker-address", "rkey", reinterpret_cast<uint64_t>(arena.data()), kArenaBytes},
        metrics);
    grpc::ServerBuilder builder;
    builder.RegisterService(service.get());
    server = builder.BuildAndStart();
    STRATA_FUZZ_ASSERT(server != nullptr);
    stub = proto::KvStore::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  }

  std::vector<uint8_t> arena;
  MetricsRegistry metrics;
  std::unique_ptr<Store> store;
  std::unique_ptr<KvStoreService> service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<proto::KvStore::Stub> stub;
  // The last BeginPut, for the worker's part of it.
  proto::BeginPutRequest last_put_request;
  proto::BeginPutResponse last_put_response;
};

Daemon& TheDaemon() {
  static Daemon* daemon = new Daemon();  // lives until exit: the server's threads may still run then
  return *daemon;
}

template <typename Request, typename Response, typename Method>
bool Call(Method method, std::string_view bytes, Response* response) {
  Request request;
  if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return false;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  const grpc::Status status = (TheDaemon().stub.get()->*method)(&context, request, response);
  // The server answers every request; only a handler that never returned would time out.
  STRATA_FUZZ_ASSERT(status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED);
  return status.ok();
}

// The worker's part of the last BeginPut: write each reserved block (bytes derived from its key) where
// the reply says, then commit with the true checksums.
void WriteAndCommitLastPut(Daemon& daemon) {
  const proto::BeginPutResponse& reply = daemon.last_put_response;
  if (reply.put_id() == 0 || reply.slots_size() != daemon.last_put_request.items_size()) return;
  proto::CommitPutRequest commit;
  commit.set_put_id(reply.put_id());
  const uint64_t base = reinterpret_cast<uint64_t>(daemon.arena.data());
  for (int i = 0; i < reply.slots_size(); ++i) {
    if (!reply.slots(i).reserved()) continue;
    const proto::PutItem& item = daemon.last_put_request.items(i);
    const uint64_t offset = reply.slots(i).remote_address() - base;
    STRATA_FUZZ_ASSERT(reply.slots(i).remote_address() >= base && offset + item.size_bytes() <= kArenaBytes);
    uint8_t* block = daemon.arena.data() + offset;
    for (uint64_t b = 0; b < item.size_bytes(); ++b) {
      block[b] = static_cast<uint8_t>(item.key().empty() ? b : item.key()[b % item.key().size()] + b);
    }
    commit.add_checksums(BlockChecksum(block, item.size_bytes()));
  }
  std::string bytes = commit.SerializeAsString();
  proto::CommitPutResponse response;
  Call<proto::CommitPutRequest>(&proto::KvStore::Stub::CommitPut, bytes, &response);
  daemon.last_put_response.Clear();
}

// Every present block of a get holds the bytes its checksum names, while the lease pins it.
void CheckGet(Daemon& daemon, const proto::BeginGetResponse& reply) {
  const uint64_t base = reinterpret_cast<uint64_t>(daemon.arena.data());
  for (const proto::GetSlot& slot : reply.slots()) {
    if (!slot.present()) continue;
    STRATA_FUZZ_ASSERT(slot.remote_address() >= base &&
                       slot.remote_address() - base + slot.size_bytes() <= kArenaBytes);
    STRATA_FUZZ_ASSERT(BlockChecksum(daemon.arena.data() + (slot.remote_address() - base), slot.size_bytes()) ==
                       slot.checksum());
  }
}

}  // namespace
}  // namespace strata::kvstore

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace strata::kvstore;
  namespace proto = strata::proto;
  using Stub = proto::KvStore::Stub;
  Daemon& daemon = TheDaemon();
  strata::fuzz::InputReader input(data, size);
  for (int calls = 0; calls < 32 && !input.empty(); ++calls) {
    const uint8_t method = input.Byte().value_or(0) % 11;
    const std::string_view bytes = input.Chunk();
    switch (method) {
      case 0: { proto::ConnectResponse r; Call<proto::ConnectRequest>(&Stub::Connect, bytes, &r); break; }
      case 1: { proto::LookupResponse r; Call<proto::LookupRequest>(&Stub::Lookup, bytes, &r); break; }
      case 2: {
        proto::BeginPutResponse r;
        if (Call<proto::BeginPutRequest>(&Stub::BeginPut, bytes, &r)) {
          daemon.last_put_request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
          daemon.last_put_response = r;
        }
        break;
      }
      case 3: { proto::CommitPutResponse r; Call<proto::CommitPutRequest>(&Stub::CommitPut, bytes, &r); break; }
      case 4: { proto::AbortPutResponse r; Call<proto::AbortPutRequest>(&Stub::AbortPut, bytes, &r); break; }
      case 5: {
        proto::BeginGetResponse r;
        if (Call<proto::BeginGetRequest>(&Stub::BeginGet, bytes, &r)) CheckGet(daemon, r);
        break;
      }
      case 6: { proto::RenewLeaseResponse r; Call<proto::RenewLeaseRequest>(&Stub::RenewLease, bytes, &r); break; }
      case 7: { proto::EndGetResponse r; Call<proto::EndGetRequest>(&Stub::EndGet, bytes, &r); break; }
      case 8: { proto::DeleteResponse r; Call<proto::DeleteRequest>(&Stub::Delete, bytes, &r); break; }
      case 9: { proto::StatsResponse r; Call<proto::StatsRequest>(&Stub::Stats, bytes, &r); break; }
      case 10: WriteAndCommitLastPut(daemon); break;
    }
  }
  return 0;
}
