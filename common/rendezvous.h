// Rendezvous (highest-random-weight) hashing of block keys over kvstores: which kvstore holds a block.
//
// Every member has a stable id: for kvstores, the host:port address workers are given (`--kvstore`) and
// the daemon advertises (`--advertise-address`; its scheduler holder id defaults to "kvstore-" + that).
// A key goes to the member with the highest Score(seed(id), key); ties (never seen in practice) go to the
// smaller id. So the choice depends only on the set of ids, never on their order, and is the same in
// every process, build and machine (the seed is FNV-1a 64 of the id's bytes, the score a splitmix64
// finalizer of seed ^ the key's first 8 bytes). Adding an (N+1)th member moves ~1/(N+1) of the keys, all
// to the new member; removing one moves only its own keys. All members weigh the same.
//
// This is a contract like the block key scheme: a worker and the scheduler that computed it differently
// would look for blocks where they are not (a miss, never wrong KV). Thread-safe (immutable).
#ifndef STRATA_COMMON_RENDEZVOUS_H_
#define STRATA_COMMON_RENDEZVOUS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/block_key.h"

namespace strata {

class RendezvousHash {
 public:
  // REQUIRES: `ids` is not empty (ids may repeat: a repeated id never wins over its first copy).
  explicit RendezvousHash(std::vector<std::string> ids);

  // The index (into the ids as given) of the member that holds `key`.
  size_t Pick(const BlockKey& key) const;

  const std::vector<std::string>& ids() const { return ids_; }
  size_t size() const { return ids_.size(); }

  // The member's seed and a key's weight on it (exposed for tests and for callers that cache seeds).
  static uint64_t Seed(std::string_view id);
  static uint64_t Score(uint64_t seed, const BlockKey& key);

 private:
  std::vector<std::string> ids_;
  std::vector<uint64_t> seeds_;
};

}  // namespace strata

#endif  // STRATA_COMMON_RENDEZVOUS_H_
