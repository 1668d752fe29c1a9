// LRU vs S3-FIFO (each with and without "evict leaves first") on a Mooncake-format request trace: the
// share of requested blocks served from cache as a reusable prefix, at several cache capacities.
//
// Each trace line is a request whose hash_ids name its blocks in prefix order. A request reuses the
// cached blocks up to its first miss (KV after a missing block is useless); then every block of the
// request is cached (the ones it had to compute, with the block before it as parent) and the cache
// evicts down to its capacity through kvstore::EvictionPolicy, exactly as the daemon's DRAM tier does.
//
//   build-kv/bin/strata_kvstore_eviction_bench [tests/data/traces/mooncake_synthetic_trace.jsonl]
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "kvstore/eviction_policy.h"
#include "nlohmann/json.hpp"

namespace strata::kvstore {
namespace {

BlockKey KeyOf(int64_t hash_id) {
  BlockKey key;
  for (int i = 0; i < 8; ++i) key.bytes[i] = static_cast<uint8_t>(static_cast<uint64_t>(hash_id) >> (8 * i));
  key.bytes[15] = 0x5a;
  return key;
}

struct Result {
  uint64_t requested = 0, reused = 0, evictions = 0;
};

Result Simulate(const std::vector<std::vector<BlockKey>>& requests, EvictionPolicyKind kind, size_t capacity,
                bool leaves_first) {
  std::unique_ptr<EvictionPolicy> policy = MakeEvictionPolicy(kind);
  absl::flat_hash_map<BlockKey, std::optional<BlockKey>> parent_of;  // cached blocks
  absl::flat_hash_map<BlockKey, int> children;                       // cached children per cached block
  Result result;
  for (const std::vector<BlockKey>& request : requests) {
    size_t prefix = 0;
    while (prefix < request.size() && parent_of.contains(request[prefix])) ++prefix;
    result.requested += request.size();
    result.reused += prefix;
    absl::flat_hash_set<BlockKey> in_use(request.begin(), request.end());  // pinned while served
    for (size_t i = 0; i < request.size(); ++i) {
      if (parent_of.contains(request[i])) {
        policy->Touch(request[i]);
        continue;
      }
      std::optional<BlockKey> parent;
      if (i > 0 && parent_of.contains(request[i - 1])) {
        parent = request[i - 1];
        ++children[*parent];
      }
      parent_of[request[i]] = parent;
      policy->Insert(request[i]);
    }
    while (parent_of.size() > capacity) {
      auto victim = policy->Evict([&](const BlockKey& key) {
        if (in_use.contains(key)) return EvictionRank::kPinned;
        if (leaves_first && children[key] > 0) return EvictionRank::kInnerNode;
        return EvictionRank::kLeaf;
      });
      if (!victim) break;
      ++result.evictions;
      if (auto parent = parent_of[*victim]) --children[*parent];
      parent_of.erase(*victim);
      children.erase(*victim);
    }
  }
  return result;
}

int Main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : STRATA_TRACE_PATH;
  std::ifstream in(path);
  if (!in) {
    std::cerr << path << ": cannot open\n";
    return 1;
  }
  std::vector<std::vector<BlockKey>> requests;
  absl::flat_hash_set<BlockKey> unique;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto json = nlohmann::json::parse(line);
    std::vector<BlockKey> keys;
    for (int64_t id : json.at("hash_ids")) keys.push_back(KeyOf(id));
    unique.insert(keys.begin(), keys.end());
    requests.push_back(std::move(keys));
  }
  std::printf("# %s: %zu requests, %zu distinct blocks\n", path.c_str(), requests.size(), unique.size());
  std::printf("| capacity (blocks) | LRU | LRU + leaves first | S3-FIFO | S3-FIFO + leaves first |\n");
  std::printf("|---:|---:|---:|---:|---:|\n");
  for (double fraction : {0.05, 0.1, 0.2, 0.4, 1.0}) {  // 100%: nothing is evicted (the ceiling)
    const size_t capacity = static_cast<size_t>(fraction * static_cast<double>(unique.size()));
    std::printf("| %zu (%.0f%%) |", capacity, 100 * fraction);
    for (auto [kind, leaves] :
         {std::pair{EvictionPolicyKind::kLru, false}, std::pair{EvictionPolicyKind::kLru, true},
          std::pair{EvictionPolicyKind::kS3Fifo, false}, std::pair{EvictionPolicyKind::kS3Fifo, true}}) {
      const Result r = Simulate(requests, kind, capacity, leaves);
      std::printf(" %.1f%% |", 100.0 * static_cast<double>(r.reused) / static_cast<double>(r.requested));
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace
}  // namespace strata::kvstore

int main(int argc, char** argv) { return strata::kvstore::Main(argc, argv); }
