// Registrations and keys the scheduler suites share.
#ifndef STRATA_TESTS_SCHEDULER_SCHEDULER_TESTING_H_
#define STRATA_TESTS_SCHEDULER_SCHEDULER_TESTING_H_

#include <string>
#include <vector>

#include "common/block_key.h"
#include "scheduler/registry.h"

namespace strata::scheduler::testing {

inline Sha256Digest Fingerprint(uint8_t fill = 0x11) {
  Sha256Digest digest;
  digest.fill(fill);
  return digest;
}

// A worker with round rates: 1 ms per token linear, no quadratic term, a 1 MB block, 1 GB/s host-to-GPU
// (1 ms a block) and 0.1 GB/s network (10 ms a block); blocks of 4 tokens.
inline Registration Worker(const std::string& id, uint8_t fingerprint = 0x11) {
  Registration r;
  r.holder_id = id;
  r.kind = HolderKind::kWorker;
  r.scheme_version = kBlockKeySchemeVersion;
  r.key_context.model_fingerprint = Fingerprint(fingerprint);
  r.key_context.block_tokens = 4;
  r.key_context.kv_dtype = DType::kBF16;
  r.address = id + ":1";
  r.worker.gpu_kv_blocks = 1000;
  r.worker.host_kv_blocks = 1000;
  r.worker.block_bytes = 1'000'000;
  r.worker.prefill_linear_s_per_token = 1e-3;
  r.worker.prefill_quadratic_s_per_token2 = 0;
  r.worker.host_to_gpu_bytes_per_s = 1e9;
  r.worker.network_bytes_per_s = 1e8;
  return r;
}

inline Registration Kvstore(const std::string& id, double ssd_read_bytes_per_s = 1e8) {
  Registration r;
  r.holder_id = id;
  r.kind = HolderKind::kKvstore;
  r.scheme_version = kBlockKeySchemeVersion;
  r.address = id + ":2";
  r.kvstore.dram_blocks = 1000;
  r.kvstore.ssd_blocks = 1000;
  r.kvstore.ssd_read_bytes_per_s = ssd_read_bytes_per_s;
  return r;
}

// n distinct keys, the i-th a function of (seed, i).
inline std::vector<BlockKey> Keys(int n, uint8_t seed = 1) {
  std::vector<BlockKey> keys(n);
  for (int i = 0; i < n; ++i) {
    keys[i].bytes[0] = seed;
    keys[i].bytes[1] = static_cast<uint8_t>(i);
    keys[i].bytes[2] = static_cast<uint8_t>(i >> 8);
    keys[i].bytes[15] = 0xee;
  }
  return keys;
}

}  // namespace strata::scheduler::testing

#endif  // STRATA_TESTS_SCHEDULER_SCHEDULER_TESTING_H_
