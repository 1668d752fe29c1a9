// Store::AttachGrant: what the data plane handed out for a put or lease (per-block rkeys) ends with it — at
// commit before the bytes are checked, at abort, end and expiry — and a grant for an id that has ended is
// dropped at once.
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "kvstore/checksum.h"
#include "kvstore/store.h"

namespace strata::kvstore {
namespace {

constexpr uint64_t kBlockBytes = 4096;
constexpr uint32_t kTtlMs = 300;  // long enough for a test to attach a grant before the store's reaper runs

// Counts its destruction; optionally scribbles over a block as it goes, like a peer that keeps writing
// through its rkey until the registration behind it is gone.
class TestGrant final : public Grant {
 public:
  TestGrant(std::atomic<int>& ended, uint8_t* scribble = nullptr) : ended_(ended), scribble_(scribble) {}
  ~TestGrant() override {
    if (scribble_ != nullptr) std::memset(scribble_, 0xEE, kBlockBytes);
    ++ended_;
  }

 private:
  std::atomic<int>& ended_;
  uint8_t* scribble_;
};

class StoreGrantTest : public ::testing::Test {
 protected:
  StoreGrantTest() : arena_(16 * kBlockBytes) {
    Options options;
    options.dram_bytes = arena_.size();
    options.max_block_bytes = kBlockBytes;
    options.put_ttl_ms = kTtlMs;
    options.lease_ttl_ms = kTtlMs;
    auto store = Store::Create(options, arena_.data(), arena_.size(), nullptr, metrics_);
    EXPECT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  static BlockKey Key(uint8_t id) {
    BlockKey key;
    key.bytes[0] = id;
    return key;
  }

  // BeginPut of block `id`, its bytes written: the put id and the block's bytes in the arena.
  std::pair<uint64_t, uint8_t*> BeginPut(uint8_t id) {
    const PutItem item{Key(id), kBlockBytes, std::nullopt};
    absl::StatusOr<PutReservation> reservation = store_->BeginPut({&item, 1});
    EXPECT_TRUE(reservation.ok() && reservation->put_id != 0);
    uint8_t* data = arena_.data() + *reservation->offsets[0];
    std::memset(data, id, kBlockBytes);
    return {reservation->put_id, data};
  }

  absl::Status Commit(uint64_t put_id, uint8_t id) {
    std::vector<uint8_t> bytes(kBlockBytes, id);
    const uint64_t checksum = BlockChecksum(bytes.data(), kBlockBytes);
    return store_->CommitPut(put_id, {&checksum, 1});
  }

  uint64_t BeginGet(uint8_t id) {
    const BlockKey key = Key(id);
    absl::StatusOr<GetLease> lease = store_->BeginGet({&key, 1});
    EXPECT_TRUE(lease.ok() && lease->lease_id != 0);
    return lease.ok() ? lease->lease_id : 0;
  }

  // Past the TTL, expires what is due (unless the store's own reaper did already).
  void Expire() {
    std::this_thread::sleep_for(std::chrono::milliseconds(kTtlMs + 50));
    store_->ExpireNow();
  }

  std::vector<uint8_t> arena_;
  MetricsRegistry metrics_;
  std::unique_ptr<Store> store_;
  std::atomic<int> ended_{0};
};

TEST_F(StoreGrantTest, ACommitEndsThePutsGrantBeforeItChecksTheBytes) {
  auto [put_id, data] = BeginPut(1);
  ASSERT_TRUE(store_->AttachGrant(put_id, std::make_unique<TestGrant>(ended_, data)).ok());
  // Bytes written until the grant ended are what the commit checks: here they differ from the checksum.
  EXPECT_EQ(Commit(put_id, 1).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ended_, 1);
  // Without a late writer the same put commits, and its grant ends with it.
  auto [again, again_data] = BeginPut(1);
  ASSERT_TRUE(store_->AttachGrant(again, std::make_unique<TestGrant>(ended_)).ok());
  EXPECT_EQ(ended_, 1);
  EXPECT_TRUE(Commit(again, 1).ok());
  EXPECT_EQ(ended_, 2);
}

TEST_F(StoreGrantTest, AbortAndExpiryEndAPutsGrant) {
  auto [aborted, aborted_data] = BeginPut(1);
  ASSERT_TRUE(store_->AttachGrant(aborted, std::make_unique<TestGrant>(ended_)).ok());
  EXPECT_TRUE(store_->AbortPut(aborted).ok());
  EXPECT_EQ(ended_, 1);
  auto [expired, expired_data] = BeginPut(2);
  ASSERT_TRUE(store_->AttachGrant(expired, std::make_unique<TestGrant>(ended_)).ok());
  Expire();
  EXPECT_EQ(ended_, 2);
  EXPECT_EQ(store_->Stats().open_puts, 0u);
}

TEST_F(StoreGrantTest, EndAndExpiryEndALeasesGrant) {
  auto [put_id, data] = BeginPut(1);
  ASSERT_TRUE(Commit(put_id, 1).ok());
  const uint64_t ended_lease = BeginGet(1);
  ASSERT_TRUE(store_->AttachGrant(ended_lease, std::make_unique<TestGrant>(ended_)).ok());
  EXPECT_TRUE(store_->EndGet(ended_lease).ok());
  EXPECT_EQ(ended_, 1);
  const uint64_t expired_lease = BeginGet(1);
  ASSERT_TRUE(store_->AttachGrant(expired_lease, std::make_unique<TestGrant>(ended_)).ok());
  EXPECT_EQ(ended_, 1);
  Expire();
  EXPECT_EQ(ended_, 2);
  EXPECT_EQ(store_->Stats().pinned_bytes, 0u);
}

TEST_F(StoreGrantTest, AGrantForAnEndedIdIsRefusedAndDropped) {
  auto [put_id, data] = BeginPut(1);
  EXPECT_TRUE(store_->AbortPut(put_id).ok());
  EXPECT_EQ(store_->AttachGrant(put_id, std::make_unique<TestGrant>(ended_)).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ended_, 1);
  EXPECT_EQ(store_->AttachGrant(12345, std::make_unique<TestGrant>(ended_)).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ended_, 2);
}

}  // namespace
}  // namespace strata::kvstore
