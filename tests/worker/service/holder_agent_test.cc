// scheduler/client's HolderAgent against real strata-scheduler processes: registration, the inventory
// that opens the stream, numbered events, and a fresh registration with the inventory after the
// scheduler restarts; with two replicas, the same with each, one's death costing the other nothing (the
// holder is a kvstore here: the agent knows nothing of workers).
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

scheduler::HolderAgentOptions KvstoreAgentOptions(std::vector<std::string> schedulers) {
  scheduler::HolderAgentOptions options;
  options.scheduler_addresses = std::move(schedulers);
  options.min_backoff = std::chrono::milliseconds(50);
  options.max_backoff = std::chrono::milliseconds(200);
  proto::RegisterRequest& r = options.registration;
  r.set_holder_id("kvstore-7");
  r.set_kind(proto::HOLDER_KIND_KVSTORE);
  r.mutable_key_scheme()->set_version(kBlockKeySchemeVersion);
  r.set_address("127.0.0.1:7480");
  r.mutable_kvstore()->set_dram_blocks(100);
  return options;
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
  scheduler::HolderAgentOptions options = KvstoreAgentOptions({(*scheduler)->address()});
  options.inventory_chunk_keys = 2;  // inventories travel in several chunks
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

TEST(HolderAgent, ReportsToEveryReplicaAndLosingOneCostsTheOthersNothing) {
  auto first = SchedulerProcess::Start();
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = SchedulerProcess::Start();
  ASSERT_TRUE(second.ok()) << second.status();
  FakeStore store;
  {
    absl::MutexLock lock(&store.mutex);
    store.keys = {Key(1), Key(2), Key(3)};
  }
  scheduler::HolderAgent agent(KvstoreAgentOptions({(*first)->address(), (*second)->address()}),
                               {.inventory = [&] { return store.Inventory(); }, .load = nullptr});
  store.agent = &agent;
  agent.Start();
  for (SchedulerProcess* replica : {first->get(), second->get()}) {
    ASSERT_TRUE(WaitFor([&] { return HolderHasBlocks(*replica, 3); }, std::chrono::seconds(20)));
  }
  EXPECT_TRUE(WaitFor([&] { return agent.connected_replicas() == 2; }, std::chrono::seconds(5)));
  EXPECT_NE(agent.epoch(0), 0u);
  EXPECT_NE(agent.epoch(1), 0u);
  store.Store(Key(4));
  for (SchedulerProcess* replica : {first->get(), second->get()}) {
    ASSERT_TRUE(WaitFor([&] { return HolderHasBlocks(*replica, 4); }, std::chrono::seconds(20)));
  }

  // One replica dies: the other keeps every event, and the agent says it has one replica left.
  (*first)->Kill();
  store.Evict(Key(1));
  store.Store(Key(5));
  store.Store(Key(6));
  ASSERT_TRUE(WaitFor([&] { return HolderHasBlocks(**second, 5); }, std::chrono::seconds(20)))
      << "holders: " << List(**second).DebugString();
  EXPECT_TRUE(WaitFor([&] { return agent.connected_replicas() == 1; }, std::chrono::seconds(10)));
  EXPECT_TRUE(agent.connected());

  agent.Stop();  // deregisters from the live one without waiting on the dead one
  EXPECT_TRUE(WaitFor([&] { return List(**second).holders_size() == 0; }, std::chrono::seconds(10)));
  EXPECT_EQ(agent.connected_replicas(), 0);
}

TEST(HolderAgent, ARepeatedOrEmptySchedulerAddressIsRefusedNamingIt) {
  EXPECT_TRUE(scheduler::CheckSchedulerAddresses({"10.0.0.1:50070", "10.0.0.2:50070"}).ok());
  const absl::Status repeated = scheduler::CheckSchedulerAddresses({"10.0.0.1:50070", "10.0.0.1:50070"});
  EXPECT_EQ(repeated.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(repeated.message().find("10.0.0.1:50070 is given twice"), std::string_view::npos) << repeated;
  EXPECT_EQ(scheduler::CheckSchedulerAddresses({""}).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strata::worker::testing
