#include "tests/kvstore/test_util.h"

namespace strata::kvstore::testing {

void PutKeys(KvStoreClient& client, RegisteredBuffer& buffer, const std::vector<BlockKey>& keys, uint64_t min_bytes,
             uint64_t max_bytes) {
  std::vector<PutBlock> blocks;
  uint64_t used = 0;
  auto flush = [&] {
    if (blocks.empty()) return;
    absl::StatusOr<std::vector<PutOutcome>> outcomes = client.Put(blocks);
    ASSERT_TRUE(outcomes.ok()) << outcomes.status();
    blocks.clear();
    used = 0;
  };
  for (const BlockKey& key : keys) {
    const uint64_t size = SizeForKey(key, min_bytes, max_bytes);
    if (used + size > buffer.size()) flush();
    FillForKey(key, buffer.data() + used, size);
    blocks.push_back(PutBlock{key, buffer.data() + used, size, std::nullopt});
    used += size;
  }
  flush();
}

std::vector<GetOutcome> GetAndCheck(KvStoreClient& client, RegisteredBuffer& buffer, const std::vector<BlockKey>& keys,
                                    uint64_t max_bytes) {
  std::vector<GetOutcome> all;
  std::vector<GetBlock> blocks;
  uint64_t used = 0;
  auto flush = [&] {
    if (blocks.empty()) return;
    absl::StatusOr<std::vector<GetOutcome>> outcomes = client.Get(blocks);
    EXPECT_TRUE(outcomes.ok()) << outcomes.status();
    if (!outcomes.ok()) outcomes = std::vector<GetOutcome>(blocks.size());
    for (size_t i = 0; i < blocks.size(); ++i) {
      const GetOutcome& outcome = (*outcomes)[i];
      if (outcome.found) {
        EXPECT_TRUE(MatchesKey(blocks[i].key, static_cast<const uint8_t*>(blocks[i].data), outcome.size_bytes))
            << "wrong bytes for block " << blocks[i].key.Hex();
      }
      all.push_back(outcome);
    }
    blocks.clear();
    used = 0;
  };
  for (const BlockKey& key : keys) {
    if (used + max_bytes > buffer.size()) flush();
    std::memset(buffer.data() + used, 0xEE, max_bytes);  // poison: a short read cannot pass
    blocks.push_back(GetBlock{key, buffer.data() + used, max_bytes});
    used += max_bytes;
  }
  flush();
  return all;
}

}  // namespace strata::kvstore::testing
