// The simulated hardware of trace replay, with where each figure comes from.
//
// Prefill and decode are Strata's CUDA backend on the H100 80GB (docs/BENCHMARKS.md, "CUDA backend
// (H100)", 2026-11-23; Llama-3-8B shape, bf16):
//   - prefill: time to first token 1.86 s at 32,768 tokens and 12.08 s at 98,304. Fitted to
//     t(n) = a n + b n^2: a = 2.370e-5 s/token, b = 1.0089e-9 s/token^2 (b is causal attention, at
//     ~270 TFLOP/s; PyTorch's SDPA path measures 1.44 s and 7.19 s, so a faster attention kernel moves
//     these figures). Prefill after p cached tokens costs a n + b ((p+n)^2 - p^2) (attention over the
//     cached prefix).
//   - decode: 104 tokens/s at batch 1, 4k context (the engine, one sequence); decode only sets
//     completion times in the replay.
//   - host -> GPU: 48.6 GB/s pinned (measured, ../shared/baselines/README.md).
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
  double prefill_linear_s_per_token = 2.370e-5;
  double prefill_quadratic_s_per_token2 = 1.0089e-9;
  double decode_tokens_per_s = 104.0;
  uint64_t kv_bytes_per_token = 128 * 1024;
  double host_to_gpu_bytes_per_s = 48.6e9;
  double network_bytes_per_s = 25e9;
  double ssd_read_bytes_per_s = 6e9;
};

}  // namespace strata::scheduler::replay

#endif  // STRATA_SCHEDULER_REPLAY_COST_MODEL_H_
