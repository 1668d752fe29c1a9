// A synthetic large cluster for the load test and the routing benchmark: many workers and kvstores
// register with a Scheduler, send inventories that put millions of blocks in its index, and then a
// stream of requests shares prefixes of those "documents" (popular ones more often, Zipf-like) with new
// blocks at the end, which the chosen worker reports as stored, as a real worker would.
#ifndef STRATA_TESTS_SCHEDULER_LOAD_CLUSTER_H_
#define STRATA_TESTS_SCHEDULER_LOAD_CLUSTER_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "scheduler/scheduler.h"

namespace strata::scheduler::testing {

struct LoadSpec {
  int workers = 64;
  int kvstores = 4;
  int documents = 20000;          // distinct prefix chains
  int blocks_per_document = 100;  // so documents * blocks_per_document keys in the index
  int holders_per_document = 2;   // workers holding each document (G or H); every one is also on a kvstore
  uint32_t block_tokens = 256;
  uint64_t seed = 1;
};

class LoadCluster {
 public:
  LoadCluster(Scheduler* scheduler, const LoadSpec& spec);

  // Registers every holder and sends its inventory.
  absl::Status Populate();
  // Keys every holder was given (documents * (holders_per_document + 1) memberships).
  uint64_t index_keys() const { return static_cast<uint64_t>(spec_.documents) * spec_.blocks_per_document; }

  struct Request {
    KeyRoute route;
    int document = 0;
    int shared_blocks = 0;  // leading blocks of the document
  };
  Request Next();

  // The worker that ran `request` reports its blocks stored in G.
  absl::Status Stored(const std::string& worker_id, const Request& request);
  // Every holder heartbeats; workers report no queue (their queues are the scheduler's own estimates).
  absl::Status HeartbeatAll();

  static BlockKey DocumentKey(int document, int block);
  static std::string WorkerId(int i);
  // Which workers hold `document` (the generator's ground truth).
  std::vector<int> Holders(int document) const;

 private:
  Scheduler* scheduler_;
  LoadSpec spec_;
  Sha256Digest fingerprint_{};
  std::mt19937_64 rng_;
  std::vector<uint64_t> epochs_;  // workers then kvstores
  std::vector<uint64_t> sequences_;
  uint64_t next_unique_ = 0;
  std::vector<double> zipf_cdf_;
};

}  // namespace strata::scheduler::testing

#endif  // STRATA_TESTS_SCHEDULER_LOAD_CLUSTER_H_
