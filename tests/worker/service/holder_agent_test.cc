// scheduler/client's HolderAgent against a real strata-scheduler process: registration, the inventory
// that opens the stream, numbered events, and a fresh registration with the inventory after the
// scheduler restarts (the holder is a kvstore here: the agent knows nothing of workers).
#include "scheduler/client/holder_agent.h"

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/worker/service/worker_testing.h"

namespace strata::worker::testing {
namespace {

using strata::testing::WaitFor;

BlockKey Key(uint8_t n) {
  BlockKey key;
  key.bytes[3] = n;
  return key;
}

struct FakeStore {
  absl::Mutex mutex;
  absl::flat_hash_set<BlockKey> keys ABSL_GUARDED_BY(mutex);
  scheduler::HolderAgent* agent = nullptr;

  void Store(const BlockKey& key) {
    absl::MutexLock lock(&mutex);
    keys.insert(key);
    agent->Stored(proto::TIER_KVSTORE_DRAM, {key});
  }
  void Evict(const BlockKey& key) {
    absl::MutexLock lock(&mutex);
    keys.erase(key);
    agent->Evicted({key});
  }
  scheduler::TierInventory Inventory() {
    absl::MutexLock lock(&mutex);
    return {{proto::TIER_KVSTORE_DRAM, std::vector<BlockKey>(keys.begin(), keys.end())}};
  }
};

proto::ListHoldersResponse List(SchedulerProcess& scheduler) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  proto::ListHoldersResponse response;
  (void)scheduler.stub().ListHolders(&context, proto::ListHoldersRequest(), &response);
  return response;
}

bool HolderHasBlocks(SchedulerProcess& scheduler, uint64_t blocks) {
  const proto::ListHoldersResponse list = List(scheduler);
  return list.holders_size() == 1 && list.holders(0).holder_id() == "kvstore-7" && list.holders(0).blocks() == blocks &&
         !list.holders(0).resync_pending();
}

TEST(HolderAgent, SendsInventoryAndEventsAndRegistersAgainAfterASchedulerRestart) {
  auto scheduler = SchedulerProcess::Start();
  ASSERT_TRUE(scheduler.ok()) << scheduler.status();
  const int port = (*scheduler)->port();

  FakeStore store;
  {
    absl::MutexLock lock(&store.mutex);
    store.keys = {Key(1), Key(2), Key(10), Key(11), Key(12)};
  }
  scheduler::HolderAgentOptions options;
  options.scheduler_address = (*scheduler)->address();
  options.min_backoff = std::chrono::milliseconds(50);
  options.max_backoff = std::chrono::milliseconds(200);
  options.inventory_chunk_keys = 2;  // inventories travel in several chunks
  proto::RegisterRequest& r = options.registration;
  r.set_holder_id("kvstore-7");
  r.set_kind(proto::HOLDER_KIND_KVSTORE);
  r.mutable_key_scheme()->set_version(kBlockKeySchemeVersion);
  r.set_address("127.0.0.1:7480");
  r.mutable_kvstore()->set_dram_blocks(100);
  scheduler::HolderAgent agent(options, {.inventory = [&] { return store.Inventory(); }, .load = nullptr});
  store.agent = &agent;
  agent.Start();

  ASSERT_TRUE(WaitFor([&] { return HolderHasBlocks(**scheduler, 5); }, std::chrono::seconds(20)));
  EXPECT_TRUE(agent.connected());
  store.Store(Key(3));
  ASSERT_TRUE(WaitFor([&] { return HolderHasBlocks(**scheduler, 6); }, std::chrono::seconds(20)));
  store.Evict(Key(1));
  ASSERT_TRUE(WaitFor([&] { return HolderHasBlocks(**scheduler, 5); }, std::chrono::seconds(20)));

  // A new scheduler on the same port knows nothing: the agent's heartbeat gets NotFound, it registers
  // again and sends its inventory; changes made while it was away are in it.
  const uint64_t first_epoch = agent.epoch();
  (*scheduler)->Kill();
  store.Store(Key(4));
  auto restarted = SchedulerProcess::Start(port);
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  ASSERT_TRUE(WaitFor([&] { return HolderHasBlocks(**restarted, 6); }, std::chrono::seconds(20)))
      << "holders: " << List(**restarted).DebugString();
  EXPECT_NE(agent.epoch(), 0u);
  EXPECT_TRUE(agent.connected());
  (void)first_epoch;

  agent.Stop();  // deregisters
  EXPECT_TRUE(WaitFor([&] { return List(**restarted).holders_size() == 0; }, std::chrono::seconds(10)));
  EXPECT_FALSE(agent.connected());
}

}  // namespace
}  // namespace strata::worker::testing
