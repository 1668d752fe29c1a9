// The simulated hardware of trace replay, with where each figure comes from.
//
// Until the CUDA backend publishes its own measurements, prefill and decode are the PyTorch/transformers
// figures on the H100 80GB in ../shared/baselines/README.md (Llama-3-8B shape, bf16):
//   - prefill: TTFT 1.44 s at 32,768 tokens and 11.8 s at 131,072. Fitted to t(n) = a n + b n^2:
//     a = 2.858e-5 s/token, b = 4.689e-10 s/token^2 (predicts 7.34 s at 98,304; measured 7.19 s).
//     Prefill after p cached tokens costs a n + b ((p+n)^2 - p^2) (attention over the cached prefix).
//   - decode: 12.5-15.6 tokens/s at batch 1, 4k context (`generate`); 15 tokens/s is used.
//   - host -> GPU: 48.6 GB/s pinned (measured, same README).
// Assumed, not measured (no kvstore or NIC figures exist yet):
//   - kvstore DRAM -> worker over UCX: 25 GB/s (one 200 Gb/s NIC per GPU, as in Mooncake's testbed).
//   - kvstore SSD read: 6 GB/s (one PCIe 4 NVMe drive).
// KV bytes: Llama-3-8B keeps 32 layers x 8 KV heads x 128 x (K, V) x 2 bytes = 128 KiB per token, so a
// 512-token block is 64 MiB.
#ifndef STRATA_SCHEDULER_REPLAY_COST_MODEL_H_
#define STRATA_SCHEDULER_REPLAY_COST_MODEL_H_

#include <cstdint>

namespace strata::scheduler::replay {

struct CostModel {
  double prefill_linear_s_per_token = 2.858e-5;
  double prefill_quadratic_s_per_token2 = 4.689e-10;
  double decode_tokens_per_s = 15.0;
  uint64_t kv_bytes_per_token = 128 * 1024;
  double host_to_gpu_bytes_per_s = 48.6e9;
  double network_bytes_per_s = 25e9;
  double ssd_read_bytes_per_s = 6e9;
};

}  // namespace strata::scheduler::replay

#endif  // STRATA_SCHEDULER_REPLAY_COST_MODEL_H_
