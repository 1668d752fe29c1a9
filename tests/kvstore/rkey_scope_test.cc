// --rkey-scope=grant (default): each granted block gets an rkey of its own, registered for as long as its put
// or lease holds and unregistered when it ends (commit, abort, end, expiry); the reply of Connect names no
// arena. --rkey-scope=arena hands out the arena's one rkey and registers nothing per grant. Whether a lapsed rkey is
// refused is up to the transport (RDMA verbs check it; TCP and shared memory here do not), so these tests
// check what the daemon controls: which rkeys it hands out and how long their registrations live
// (strata_kvstore_block_rkeys). Puts and gets through such rkeys are checked byte for byte here and by the
// whole daemon suite (kvstore.arena_shm runs it with the arena's rkey: tests/kvstore/CMakeLists.txt).
#include <grpcpp/grpcpp.h>
#include <ucp/api/ucp.h>

#include <cstdlib>

#include "common/rpc.h"
#include "gtest/gtest.h"
#include "tests/kvstore/test_util.h"
#include "tests/testing/metrics_scrape.h"

namespace strata::kvstore::testing {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

std::unique_ptr<DaemonProcess> StartDaemon(std::vector<std::string> args) {
  absl::StatusOr<std::unique_ptr<DaemonProcess>> daemon = DaemonProcess::Start(std::move(args));
  EXPECT_TRUE(daemon.ok()) << daemon.status();
  return daemon.ok() ? *std::move(daemon) : nullptr;
}

double BlockRkeys(const DaemonProcess& daemon) {
  return strata::testing::MetricValue(daemon.metrics_port(), "strata_kvstore_block_rkeys").value_or(-1);
}

std::vector<BlockKey> Keys(uint64_t seed, int count) {
  std::vector<BlockKey> keys;
  for (int i = 0; i < count; ++i) keys.push_back(RandomKey(seed * 1000 + i));
  return keys;
}

// A bare UCX endpoint to the daemon, to see what an rkey lets a client reach.
class Peer {
 public:
  explicit Peer(const std::string& worker_address) {
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_RMA;
    EXPECT_EQ(ucp_init(&params, nullptr, &context_), UCS_OK);
    ucp_worker_params_t worker_params{};
    EXPECT_EQ(ucp_worker_create(context_, &worker_params, &worker_), UCS_OK);
    ucp_ep_params_t ep_params{};
    ep_params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    ep_params.address = reinterpret_cast<const ucp_address_t*>(worker_address.data());
    EXPECT_EQ(ucp_ep_create(worker_, &ep_params, &ep_), UCS_OK);
  }
  ~Peer() {
    for (ucp_rkey_h rkey : rkeys_) ucp_rkey_destroy(rkey);
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_EP_CLOSE_FLAG_FORCE;
    void* request = ucp_ep_close_nbx(ep_, &param);
    while (UCS_PTR_IS_PTR(request) && ucp_request_check_status(request) == UCS_INPROGRESS) ucp_worker_progress(worker_);
    if (UCS_PTR_IS_PTR(request)) ucp_request_free(request);
    ucp_worker_destroy(worker_);
    ucp_cleanup(context_);
  }
  // Whether `packed` maps the memory at `address` into this process: a shared-memory rkey, through which a
  // plain pointer reaches the whole segment (the arena), checked by nothing.
  bool MapsSharedMemory(const std::string& packed, uint64_t address) {
    ucp_rkey_h rkey = nullptr;
    if (ucp_ep_rkey_unpack(ep_, packed.data(), &rkey) != UCS_OK) {
      ADD_FAILURE() << "ucp_ep_rkey_unpack failed";
      return false;
    }
    rkeys_.push_back(rkey);
    void* local = nullptr;
    return ucp_rkey_ptr(rkey, address, &local) == UCS_OK;
  }

 private:
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_ep_h ep_ = nullptr;
  std::vector<ucp_rkey_h> rkeys_;
};

proto::ConnectResponse Connect(proto::KvStore::Stub& stub) {
  grpc::ClientContext context;
  SetDeadline(context, std::chrono::seconds(5));
  proto::ConnectResponse reply;
  EXPECT_TRUE(stub.Connect(&context, proto::ConnectRequest(), &reply).ok());
  return reply;
}

proto::BeginPutResponse BeginPut(proto::KvStore::Stub& stub, const std::vector<BlockKey>& keys, uint64_t bytes) {
  proto::BeginPutRequest request;
  for (const BlockKey& key : keys) {
    proto::PutItem* item = request.add_items();
    item->set_key(key.ToBytes());
    item->set_size_bytes(bytes);
  }
  grpc::ClientContext context;
  SetDeadline(context, std::chrono::seconds(5));
  proto::BeginPutResponse reply;
  EXPECT_TRUE(stub.BeginPut(&context, request, &reply).ok());
  return reply;
}

proto::BeginGetResponse BeginGet(proto::KvStore::Stub& stub, const std::vector<BlockKey>& keys) {
  proto::BeginGetRequest request;
  for (const BlockKey& key : keys) request.add_keys(key.ToBytes());
  grpc::ClientContext context;
  SetDeadline(context, std::chrono::seconds(5));
  proto::BeginGetResponse reply;
  EXPECT_TRUE(stub.BeginGet(&context, request, &reply).ok());
  return reply;
}

TEST(RkeyScope, GrantGivesEachBlockItsOwnRkeyForAsLongAsItsPutOrLeaseHolds) {
  auto daemon = StartDaemon({"--rkey-scope", "grant", "--dram-bytes", std::to_string(32 * kMiB), "--lease-ttl-ms",
                             "400", "--put-ttl-ms", "400"});
  ASSERT_NE(daemon, nullptr);
  auto stub = RawStub(*daemon);
  EXPECT_EQ(BlockRkeys(*daemon), 0);
  const proto::ConnectResponse connect = Connect(*stub);
  EXPECT_EQ(connect.arena_base(), 0u) << "the arena's address goes out only with --rkey-scope=arena";
  EXPECT_EQ(connect.arena_bytes(), 0u);
  Peer peer(connect.worker_address());

  // A put: one rkey per reserved block, none for the arena; aborting it ends them.
  const std::vector<BlockKey> aborted = Keys(1, 3);
  proto::BeginPutResponse put = BeginPut(*stub, aborted, 64 * 1024);
  ASSERT_NE(put.put_id(), 0u);
  EXPECT_TRUE(put.rkey().empty());
  ASSERT_EQ(put.slots_size(), 3);
  // (What an rkey's bytes hold is the transport's: on TCP and shared memory they name no range, so the
  // three may be byte-equal; the registrations behind them are three.)
  for (const proto::PutSlot& slot : put.slots()) {
    EXPECT_TRUE(slot.reserved());
    EXPECT_FALSE(slot.rkey().empty());
    EXPECT_FALSE(peer.MapsSharedMemory(slot.rkey(), slot.remote_address()))
        << "a block's rkey maps the arena's shared memory (the arena's registration, handed back by a cache)";
  }
  EXPECT_EQ(BlockRkeys(*daemon), 3);
  {
    grpc::ClientContext context;
    SetDeadline(context, std::chrono::seconds(5));
    proto::AbortPutRequest abort;
    abort.set_put_id(put.put_id());
    proto::AbortPutResponse aborted_reply;
    ASSERT_TRUE(stub->AbortPut(&context, abort, &aborted_reply).ok());
  }
  EXPECT_EQ(BlockRkeys(*daemon), 0);

  // A put that is never committed: its rkeys end when it expires.
  ASSERT_NE(BeginPut(*stub, Keys(2, 2), 4096).put_id(), 0u);
  EXPECT_EQ(BlockRkeys(*daemon), 2);
  EXPECT_TRUE(WaitFor([&] { return BlockRkeys(*daemon) == 0; }, std::chrono::seconds(10)));

  // Puts and gets through a client, byte for byte; nothing stays registered after either.
  absl::StatusOr<std::unique_ptr<KvStoreClient>> client = daemon->Connect();
  ASSERT_TRUE(client.ok()) << client.status();
  RegisteredBuffer buffer(**client, 8 * kMiB);
  const std::vector<BlockKey> keys = Keys(3, 6);
  PutKeys(**client, buffer, keys, 1, 1 * kMiB);
  EXPECT_EQ(BlockRkeys(*daemon), 0);
  for (const GetOutcome& outcome : GetAndCheck(**client, buffer, keys, 1 * kMiB)) EXPECT_TRUE(outcome.found);
  // The client ends its lease without waiting for the reply.
  EXPECT_TRUE(WaitFor([&] { return BlockRkeys(*daemon) == 0; }, std::chrono::seconds(5)));

  // A lease: one rkey per present block; ending it ends them.
  proto::BeginGetResponse lease = BeginGet(*stub, {keys[0], RandomKey(99), keys[1]});
  ASSERT_NE(lease.lease_id(), 0u);
  EXPECT_TRUE(lease.rkey().empty());
  ASSERT_EQ(lease.slots_size(), 3);
  EXPECT_FALSE(lease.slots(0).rkey().empty());
  EXPECT_TRUE(lease.slots(1).rkey().empty()) << "a miss got an rkey";
  EXPECT_FALSE(lease.slots(2).rkey().empty());
  EXPECT_EQ(BlockRkeys(*daemon), 2);
  {
    grpc::ClientContext context;
    SetDeadline(context, std::chrono::seconds(5));
    proto::EndGetRequest end;
    end.set_lease_id(lease.lease_id());
    proto::EndGetResponse ended;
    ASSERT_TRUE(stub->EndGet(&context, end, &ended).ok());
  }
  EXPECT_EQ(BlockRkeys(*daemon), 0);

  // A lease never ended: its rkeys end when it expires, with its pins.
  ASSERT_NE(BeginGet(*stub, keys).lease_id(), 0u);
  EXPECT_EQ(BlockRkeys(*daemon), 6);
  EXPECT_TRUE(WaitFor([&] { return BlockRkeys(*daemon) == 0; }, std::chrono::seconds(10)));
  EXPECT_EQ(StatsOf(**client).pinned_bytes(), 0u);
}

TEST(RkeyScope, ArenaHandsOutTheArenasRkeyAndRegistersNothingPerGrant) {
  auto daemon = StartDaemon({"--rkey-scope", "arena", "--dram-bytes", std::to_string(32 * kMiB)});
  ASSERT_NE(daemon, nullptr);
  auto stub = RawStub(*daemon);
  const proto::ConnectResponse connect = Connect(*stub);
  EXPECT_NE(connect.arena_base(), 0u);
  proto::BeginPutResponse put = BeginPut(*stub, Keys(4, 2), 4096);
  ASSERT_NE(put.put_id(), 0u);
  EXPECT_FALSE(put.rkey().empty());
  for (const proto::PutSlot& slot : put.slots()) EXPECT_TRUE(slot.rkey().empty());
  EXPECT_EQ(BlockRkeys(*daemon), 0);
  // On one host the arena's rkey is the shared segment (what the grant scope withholds); the check above
  // of block rkeys is only as good as this one.
  if (std::getenv("UCX_TLS") != nullptr) GTEST_SKIP() << "UCX_TLS is set: shared memory may be off";
  Peer peer(connect.worker_address());
  EXPECT_TRUE(peer.MapsSharedMemory(put.rkey(), put.slots(0).remote_address()));
}

}  // namespace
}  // namespace strata::kvstore::testing
