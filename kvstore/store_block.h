// Store::Block, the index's entry: private to the store's files (store.cc, store_durability.cc).
// Guarded by Store::mutex_.
#ifndef STRATA_KVSTORE_STORE_BLOCK_H_
#define STRATA_KVSTORE_STORE_BLOCK_H_

#include <cstdint>
#include <memory>
#include <optional>

#include "common/block_key.h"
#include "kvstore/store.h"

namespace strata::kvstore {

struct Store::Block {
  enum class State { kReserved, kPublished };
  BlockKey key;
  uint64_t size_bytes = 0;
  uint64_t checksum = 0;
  std::optional<BlockKey> parent;
  State state = State::kReserved;
  bool in_dram = false;  // published bytes at `offset` (or reserved space while kReserved)
  uint64_t offset = 0;
  bool on_ssd = false;
  int pins = 0;
  bool moving = false;   // being written to SSD for eviction, or read from SSD for promotion
  bool deleted = false;  // no longer in the index; memory freed when unpinned
  int dram_children = 0;
  std::shared_ptr<Block> counted_parent;  // the parent whose dram_children counts this block
  int ssd_children = 0;
  std::shared_ptr<Block> ssd_counted_parent;  // the parent whose ssd_children counts this block
};

}  // namespace strata::kvstore

#endif  // STRATA_KVSTORE_STORE_BLOCK_H_
