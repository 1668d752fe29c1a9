// Mooncake-format request traces (FAST'25 trace release): one JSON object per line with `timestamp`
// (ms from the first request), `input_length`, `output_length` (tokens) and `hash_ids` (a chain of
// prefix block ids, 512 tokens a block; equal ids at equal positions are the same KV).
#ifndef STRATA_SCHEDULER_REPLAY_TRACE_H_
#define STRATA_SCHEDULER_REPLAY_TRACE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/block_key.h"

namespace strata::scheduler::replay {

struct TraceRequest {
  double arrival_s = 0;
  uint64_t input_tokens = 0;
  uint64_t output_tokens = 0;
  std::vector<uint64_t> hash_ids;
};

// Reads the whole trace. InvalidArgument naming the line for malformed JSON, a missing or negative
// field, more hash ids than `input_length` allows at `block_tokens` a block, or timestamps going back.
absl::StatusOr<std::vector<TraceRequest>> ReadMooncakeTrace(const std::string& path, uint32_t block_tokens = 512);

// Share of prompt blocks an infinite cache would serve (prefix hits only, requests in trace order, each
// request's blocks cached once it ran): the ceiling any placement can reach on this trace.
double IdealPrefixHitRate(const std::vector<TraceRequest>& trace);

// The 16-byte key replay gives a trace block id (two splitmix64 halves): as well mixed as a scheme-v1
// key, which the index's hash relies on. Trace ids are not token blocks, so no SHA-256 is spent on them.
BlockKey TraceBlockKey(uint64_t hash_id);

// SplitMix64's finalizer: a cheap bijective mix of a trace's small hash ids into well-spread 64 bits.
uint64_t SplitMix64(uint64_t x);

}  // namespace strata::scheduler::replay

#endif  // STRATA_SCHEDULER_REPLAY_TRACE_H_
