// The soak benchmark: a whole local cluster (strata-scheduler with its front door, strata-kvstore behind a
// TCP proxy on the workers' path to it, strata-workers on a model) under a Mooncake trace for a set time,
// with faults injected at random: kill -9 and restart of the kvstore, of a worker or of the scheduler,
// freezes of the worker <-> kvstore path, and (with the I/O fault shim) a full or failing kvstore SSD. Every answer is compared with the answer the same prompt
// got before any fault (greedy decoding, prefix cache off); every failure is put down to the fault
// active when it happened, or counted as unexplained; each daemon's memory is compared start vs end.
#ifndef STRATA_BENCH_SOAK_SOAK_H_
#define STRATA_BENCH_SOAK_SOAK_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace strata::soak {

struct SoakOptions {
  std::string scheduler_path, kvstore_path, worker_path;  // the daemons' binaries
  std::string io_fault_shim;  // tests/testing/io_fault_shim.c's library; empty: no disk faults
  std::string model_dir;
  std::string trace_path;
  double duration_s = 600;
  int workers = 2;
  int concurrency = 3;              // client threads
  size_t prompts = 48;              // distinct prompts taken from the head of the trace
  uint32_t max_prompt_tokens = 512;
  uint32_t max_tokens = 16;
  double mean_fault_interval_s = 20;  // faults start at exponential intervals of this mean
  int lease_ms = 1500;
  uint64_t seed = 1;
  bool verbose = true;              // one line on stderr per fault
};

struct FaultRecord {
  std::string kind;                 // kill_kvstore, kill_worker, kill_scheduler, freeze_kvstore_path,
                                    // fail_kvstore_disk
  double start_s = 0, end_s = 0;    // since the soak began; end: the cluster is whole again
  int failures = 0;                 // requests that failed while it was active (or within its grace)
};

struct DaemonMemory {
  std::string name;
  uint64_t start_rss_bytes = 0, end_rss_bytes = 0;
  int restarts = 0;                 // incarnations after the first; RSS is of the first and the last
};

struct SoakReport {
  double duration_s = 0;
  uint64_t served = 0;              // answered, with the reference answer
  uint64_t failed = 0;              // an error status (each put down to a fault, or unexplained)
  uint64_t unexplained_failures = 0;
  uint64_t wrong = 0;               // answered with other text than the reference: must be 0
  std::vector<FaultRecord> faults;
  std::map<std::string, uint64_t> failures_by_fault;
  std::vector<std::string> unexplained;  // the first few errors no fault explains
  std::vector<DaemonMemory> memory;
  nlohmann::json ToJson() const;
  std::string ToText() const;
};

// Runs the soak. An error only when the cluster cannot be set up or cannot be brought back after a
// fault (then the report so far is lost: the message says what failed).
absl::StatusOr<SoakReport> RunSoak(const SoakOptions& options);

}  // namespace strata::soak

#endif  // STRATA_BENCH_SOAK_SOAK_H_
