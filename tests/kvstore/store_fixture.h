// An in-process kvstore::Store over a heap arena of 4 KiB blocks, with or without an SSD tier in a scratch
// directory: for tests of the store's own logic (events, races) without the daemon around it.
#ifndef STRATA_TESTS_KVSTORE_STORE_FIXTURE_H_
#define STRATA_TESTS_KVSTORE_STORE_FIXTURE_H_

#include <cstring>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/strings.h"
#include "gtest/gtest.h"
#include "kvstore/checksum.h"
#include "kvstore/event_batcher.h"
#include "kvstore/store.h"
#include "tests/testing/scratch_dir.h"

namespace strata::kvstore::testing {

// Block `id`'s key; its bytes are all `id`.
inline BlockKey Key(uint8_t id) {
  BlockKey key;
  key.bytes[0] = id;
  key.bytes[15] = 0x5A;
  return key;
}

inline constexpr uint64_t kBlockBytes = 4096;

class StoreFixture {
 public:
  StoreFixture(int blocks, bool with_ssd) : arena_(blocks * kBlockBytes) {
    Options options;
    options.dram_bytes = arena_.size();
    options.max_block_bytes = kBlockBytes;
    std::unique_ptr<SsdTier> ssd;
    if (with_ssd) {
      auto opened = SsdTier::Open(dir_.path() / "ssd", SsdIo::kBuffered);
      EXPECT_TRUE(opened.ok()) << opened.status();
      ssd = *std::move(opened);
    }
    auto store = Store::Create(options, arena_.data(), arena_.size(), std::move(ssd), metrics_, &batcher_);
    EXPECT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  // Puts the blocks in one two-phase put (blocks already stored are skipped, as the daemon does).
  absl::Status TryPut(const std::vector<uint8_t>& ids) {
    std::vector<PutItem> items;
    for (uint8_t id : ids) items.push_back(PutItem{Key(id), kBlockBytes, std::nullopt});
    absl::StatusOr<PutReservation> reservation = store_->BeginPut(items);
    if (!reservation.ok()) return reservation.status();
    if (reservation->put_id == 0) return absl::OkStatus();
    std::vector<uint64_t> checksums;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!reservation->offsets[i]) continue;
      uint8_t* data = arena_.data() + *reservation->offsets[i];
      std::memset(data, ids[i], kBlockBytes);
      checksums.push_back(BlockChecksum(data, kBlockBytes));
    }
    return store_->CommitPut(reservation->put_id, checksums);
  }
  void Put(const std::vector<uint8_t>& ids) { ASSERT_TRUE(TryPut(ids).ok()); }

  // Gets block `id` under a lease: false when absent; an error when present with other bytes.
  absl::StatusOr<bool> GetAndCheck(uint8_t id) {
    const BlockKey key = Key(id);
    absl::StatusOr<GetLease> lease = store_->BeginGet({&key, 1});
    if (!lease.ok()) return lease.status();
    if (!lease->slots[0].present) return false;
    const uint8_t* data = arena_.data() + lease->slots[0].offset;
    for (uint64_t i = 0; i < kBlockBytes; ++i) {
      if (data[i] != id) return absl::DataLossError(StrCat("block ", int{id}, " served with byte ", int{data[i]}));
    }
    if (absl::Status ended = store_->EndGet(lease->lease_id); !ended.ok()) return ended;
    return true;
  }

  Store& store() { return *store_; }
  EventBatcher& batcher() { return batcher_; }

 private:
  strata::testing::ScratchDir dir_ = strata::testing::MakeTempDir("strata-store");
  std::vector<uint8_t> arena_;
  MetricsRegistry metrics_;
  EventBatcher batcher_;
  std::unique_ptr<Store> store_;
};

}  // namespace strata::kvstore::testing

#endif  // STRATA_TESTS_KVSTORE_STORE_FIXTURE_H_
