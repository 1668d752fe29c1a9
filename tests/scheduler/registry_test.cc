#include "scheduler/registry.h"

#include <set>

#include "gtest/gtest.h"
#include "scheduler/clock.h"
#include "scheduler/scheduler.h"
#include "tests/scheduler/scheduler_testing.h"

namespace strata::scheduler {
namespace {

using testing::Kvstore;
using testing::Worker;

TEST(SchedulerRegistry, RegistersWorkersAndKvstoresInDistinctSlots) {
  Registry registry(absl::Seconds(5));
  const absl::Time now = absl::UnixEpoch();
  auto a = registry.Register(Worker("w0"), now);
  auto b = registry.Register(Kvstore("kv0"), now);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_NE((*a)->slot, (*b)->slot);
  EXPECT_NE((*a)->epoch, (*b)->epoch);
  EXPECT_EQ(registry.WorkerSlots(), std::vector<int>{(*a)->slot});
  EXPECT_EQ(registry.CountKind(HolderKind::kKvstore), 1u);
}

TEST(SchedulerRegistry, RefusesMalformedRegistrationsWithInvalidArgument) {
  Registry registry(absl::Seconds(5));
  const absl::Time now = absl::UnixEpoch();
  std::vector<std::pair<std::string, Registration>> cases;
  Registration r = Worker("");
  cases.emplace_back("empty id", r);
  r = Worker("bad id with spaces");
  cases.emplace_back("spaces", r);
  r = Worker(std::string(200, 'a'));
  cases.emplace_back("long id", r);
  r = Worker("w");
  r.kind.reset();
  cases.emplace_back("no kind", r);
  r = Worker("w");
  r.key_context.model_fingerprint = {};
  cases.emplace_back("no fingerprint", r);
  r = Worker("w");
  r.key_context.block_tokens = 0;
  cases.emplace_back("block 0", r);
  r = Worker("w");
  r.worker.gpu_kv_blocks = 0;
  cases.emplace_back("no capacity", r);
  r = Worker("w");
  r.worker.prefill_linear_s_per_token = -1;
  cases.emplace_back("negative rate", r);
  r = Worker("w");
  r.worker.prefill_quadratic_s_per_token2 = std::numeric_limits<double>::quiet_NaN();
  cases.emplace_back("NaN rate", r);
  r = Worker("w");
  r.worker.network_bytes_per_s = 0;
  cases.emplace_back("no network", r);
  r = Worker("w");
  r.worker.block_bytes = 0;
  cases.emplace_back("no block bytes", r);
  r = Kvstore("kv");
  r.kvstore = {};
  cases.emplace_back("kvstore without capacity", r);
  for (auto& [name, registration] : cases) {
    auto result = registry.Register(registration, now);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << name;
  }
  EXPECT_TRUE(registry.AllSlots().empty());
}

TEST(SchedulerRegistry, RefusesAnotherKeySchemeVersionLoudly) {
  Registry registry(absl::Seconds(5));
  Registration r = Worker("w0");
  r.scheme_version = kBlockKeySchemeVersion + 1;
  auto result = registry.Register(r, absl::UnixEpoch());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(result.status().message().find("scheme version 2"), absl::string_view::npos) << result.status();
  r = Kvstore("kv0");
  r.scheme_version = 0;
  EXPECT_EQ(registry.Register(r, absl::UnixEpoch()).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SchedulerRegistry, RefusesADuplicateLiveIdAndAcceptsItAfterRemoval) {
  Registry registry(absl::Seconds(5));
  auto first = registry.Register(Worker("w0"), absl::UnixEpoch());
  ASSERT_TRUE(first.ok());
  const uint64_t epoch = (*first)->epoch;
  const int slot = (*first)->slot;
  EXPECT_EQ(registry.Register(Worker("w0"), absl::UnixEpoch()).status().code(), absl::StatusCode::kAlreadyExists);
  registry.Remove(slot);
  auto second = registry.Register(Worker("w0"), absl::UnixEpoch());
  ASSERT_TRUE(second.ok());
  EXPECT_GT((*second)->epoch, epoch);
}

TEST(SchedulerRegistry, HeartbeatNeedsTheLiveEpoch) {
  Registry registry(absl::Seconds(5));
  auto holder = registry.Register(Worker("w0"), absl::UnixEpoch());
  ASSERT_TRUE(holder.ok());
  EXPECT_EQ(registry.Heartbeat("nobody", 1, absl::UnixEpoch()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry.Heartbeat("w0", (*holder)->epoch + 7, absl::UnixEpoch()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(registry.Heartbeat("w0", (*holder)->epoch, absl::UnixEpoch()).ok());
}

TEST(SchedulerRegistry, SlotsRunOutWithResourceExhausted) {
  Registry registry(absl::Seconds(5));
  for (int i = 0; i < kMaxHolders; ++i)
    ASSERT_TRUE(registry.Register(Kvstore("kv" + std::to_string(i)), absl::UnixEpoch()).ok());
  EXPECT_EQ(registry.Register(Kvstore("one-more"), absl::UnixEpoch()).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(SchedulerLease, LapsedWorkerLeavesPlacementAndTheIndex) {
  SimClock clock;
  Options options;
  options.lease = absl::Seconds(3);
  Scheduler scheduler(options, &clock, nullptr);
  auto w0 = scheduler.Register(Worker("w0"));
  auto w1 = scheduler.Register(Worker("w1"));
  ASSERT_TRUE(w0.ok() && w1.ok());
  const auto keys = testing::Keys(4);
  Inventory inventory;
  inventory.tiers.emplace_back(Tier::kGpu, keys);
  ASSERT_TRUE(scheduler.ApplyEvents("w0", w0->epoch, &inventory, {}).ok());
  EXPECT_EQ(scheduler.IndexBlocks(), 4u);

  KeyRoute route;
  route.model_fingerprint = testing::Fingerprint();
  route.keys = keys;
  route.prompt_tokens = 17;
  auto routed = scheduler.Route(route);
  ASSERT_TRUE(routed.ok());
  EXPECT_EQ(routed->worker_id, "w0");

  // w1 keeps its lease, w0 stops: after the lease, before any reaping, w0 is no longer handed out.
  clock.Advance(absl::Seconds(2));
  ASSERT_TRUE(scheduler.Heartbeat("w1", w1->epoch, std::nullopt, 0).ok());
  clock.Advance(absl::Seconds(1.5));
  for (int i = 0; i < 5; ++i) {
    routed = scheduler.Route(route);
    ASSERT_TRUE(routed.ok());
    EXPECT_EQ(routed->worker_id, "w1");
  }
  EXPECT_EQ(scheduler.ExpireLeases(), std::vector<std::string>{"w0"});
  EXPECT_EQ(scheduler.IndexBlocks(), 0u);
  EXPECT_EQ(scheduler.Holders().size(), 1u);
  // Its events and heartbeats now say "register again".
  EXPECT_EQ(scheduler.Heartbeat("w0", w0->epoch, std::nullopt, 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler.ApplyEvents("w0", w0->epoch, &inventory, {}).status().code(), absl::StatusCode::kNotFound);
  // With no live worker left, routing says so.
  clock.Advance(absl::Seconds(10));
  EXPECT_EQ(scheduler.Route(route).status().code(), absl::StatusCode::kUnavailable);
}

TEST(SchedulerLease, ALapsedIdRegistersAgainBeforeTheReaperRuns) {
  SimClock clock;
  Scheduler scheduler(Options{}, &clock, nullptr);
  auto first = scheduler.Register(Worker("w0"));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(scheduler.Register(Worker("w0")).status().code(), absl::StatusCode::kAlreadyExists);  // live
  clock.Advance(absl::Seconds(6));
  auto second = scheduler.Register(Worker("w0"));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_GT(second->epoch, first->epoch);
  EXPECT_EQ(scheduler.Heartbeat("w0", first->epoch, std::nullopt, 0).status().code(),
            absl::StatusCode::kFailedPrecondition);  // the old incarnation is told so
  EXPECT_EQ(scheduler.Holders().size(), 1u);
}

TEST(SchedulerLease, ARestartedHolderWithANewIncarnationReplacesItsLiveRegistrationAtOnce) {
  SimClock clock;
  Scheduler scheduler(Options{}, &clock, nullptr);
  Registration first = Worker("w0");
  first.incarnation = 7;
  auto old = scheduler.Register(first);
  ASSERT_TRUE(old.ok());
  Inventory inventory;
  inventory.tiers.emplace_back(Tier::kGpu, testing::Keys(4));
  ASSERT_TRUE(scheduler.ApplyEvents("w0", old->epoch, &inventory, {}).ok());
  ASSERT_EQ(scheduler.IndexBlocks(), 4u);

  // No time passes: the lease is live. Without an incarnation the id is still refused ...
  EXPECT_EQ(scheduler.Register(Worker("w0")).status().code(), absl::StatusCode::kAlreadyExists);
  // ... with another one it replaces the dead process's registration, whose blocks go with it.
  Registration restarted = Worker("w0");
  restarted.incarnation = 8;
  restarted.address = "w0:2";
  auto fresh = scheduler.Register(restarted);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_GT(fresh->epoch, old->epoch);
  EXPECT_EQ(scheduler.IndexBlocks(), 0u);
  ASSERT_EQ(scheduler.Holders().size(), 1u);
  EXPECT_EQ(scheduler.Holders()[0].address, "w0:2");
  EXPECT_EQ(scheduler.Heartbeat("w0", old->epoch, std::nullopt, 0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(scheduler.Heartbeat("w0", fresh->epoch, std::nullopt, 0).ok());
}

TEST(SchedulerLease, AnUnreachableWorkerLeavesPlacementAtOnceAndIsRetriedWithBackoff) {
  SimClock clock;
  Options options;
  options.lease = absl::Seconds(10);
  Scheduler scheduler(options, &clock, nullptr);
  auto w0 = scheduler.Register(Worker("w0"));
  auto w1 = scheduler.Register(Worker("w1"));
  ASSERT_TRUE(w0.ok() && w1.ok());
  KeyRoute route{testing::Fingerprint(), testing::Keys(2), 8, Policy::kRoundRobin};
  auto routed_to = [&] {
    std::set<std::string> ids;
    for (int i = 0; i < 4; ++i) {
      auto routed = scheduler.Route(route);
      if (routed.ok()) ids.insert(routed->worker_id);
    }
    return ids;
  };
  ASSERT_EQ(routed_to(), (std::set<std::string>{"w0", "w1"}));

  // Well within its lease, w0 is out as soon as it is reported, for 250 ms ...
  ASSERT_TRUE(scheduler.MarkUnreachable("w0", w0->epoch).ok());
  EXPECT_EQ(routed_to(), std::set<std::string>{"w1"});
  EXPECT_TRUE(scheduler.Holders()[0].unreachable);
  clock.Advance(absl::Milliseconds(200));
  ASSERT_TRUE(scheduler.MarkUnreachable("w0", w0->epoch).ok());  // within the backoff: changes nothing
  clock.Advance(absl::Milliseconds(60));
  EXPECT_EQ(routed_to(), (std::set<std::string>{"w0", "w1"}));  // tried again
  // ... then 500 ms after the next report (the backoff doubles while it stays unreachable) ...
  ASSERT_TRUE(scheduler.MarkUnreachable("w0", w0->epoch).ok());
  clock.Advance(absl::Milliseconds(400));
  EXPECT_EQ(routed_to(), std::set<std::string>{"w1"});
  clock.Advance(absl::Milliseconds(110));
  EXPECT_EQ(routed_to(), (std::set<std::string>{"w0", "w1"}));
  // ... and back at once, backoff reset, when it answers.
  ASSERT_TRUE(scheduler.MarkUnreachable("w0", w0->epoch).ok());
  ASSERT_TRUE(scheduler.MarkReachable("w0", w0->epoch).ok());
  EXPECT_EQ(routed_to(), (std::set<std::string>{"w0", "w1"}));
  ASSERT_TRUE(scheduler.MarkUnreachable("w0", w0->epoch).ok());
  clock.Advance(absl::Milliseconds(260));
  EXPECT_EQ(routed_to(), (std::set<std::string>{"w0", "w1"}));
  // Another incarnation's epoch, or an unknown id, changes nothing.
  EXPECT_EQ(scheduler.MarkUnreachable("w1", w1->epoch + 100).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(scheduler.MarkUnreachable("w9", 1).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(routed_to(), (std::set<std::string>{"w0", "w1"}));
}

TEST(SchedulerLease, WorkersOfOneModelMustAgreeOnBlockSizeAndDtype) {
  SimClock clock;
  Scheduler scheduler(Options{}, &clock, nullptr);
  ASSERT_TRUE(scheduler.Register(Worker("w0")).ok());
  Registration other = Worker("w1");
  other.key_context.block_tokens = 8;
  EXPECT_EQ(scheduler.Register(other).status().code(), absl::StatusCode::kFailedPrecondition);
  other = Worker("w1");
  other.key_context.kv_dtype = DType::kF16;
  EXPECT_EQ(scheduler.Register(other).status().code(), absl::StatusCode::kFailedPrecondition);
  other = Worker("w1", /*fingerprint=*/0x22);
  other.key_context.block_tokens = 8;
  EXPECT_TRUE(scheduler.Register(other).ok());  // another model may differ
}

}  // namespace
}  // namespace strata::scheduler
