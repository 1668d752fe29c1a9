#include "common/rendezvous.h"

#include "common/status.h"

namespace strata {

RendezvousHash::RendezvousHash(std::vector<std::string> ids) : ids_(std::move(ids)) {
  STRATA_CHECK(!ids_.empty());
  seeds_.reserve(ids_.size());
  for (const std::string& id : ids_) seeds_.push_back(Seed(id));
}

uint64_t RendezvousHash::Seed(std::string_view id) {
  uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a 64
  for (const char c : id) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

uint64_t RendezvousHash::Score(uint64_t seed, const BlockKey& key) {
  uint64_t z = seed ^ key.Low64();  // splitmix64's finalizer: every input bit flips each output bit ~1/2
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

size_t RendezvousHash::Pick(const BlockKey& key) const {
  size_t best = 0;
  uint64_t best_score = Score(seeds_[0], key);
  for (size_t i = 1; i < ids_.size(); ++i) {
    const uint64_t score = Score(seeds_[i], key);
    if (score > best_score || (score == best_score && ids_[i] < ids_[best])) {
      best = i;
      best_score = score;
    }
  }
  return best;
}

}  // namespace strata
