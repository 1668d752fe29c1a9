#!/usr/bin/env python3
"""Joins the CUDA benchmark's JSON with the PyTorch baseline's and prints the markdown table of
docs/BENCHMARKS.md "CUDA backend (H100)", with the floor beside every figure:
  attention: FLOPs at the measured cuBLAS BF16 GEMM rate;
  TTFT: GEMM FLOPs / GEMM rate + attention FLOPs / best measured attention rate (ours or SDPA);
  decode: (weight bytes + KV bytes read per step) / measured HBM copy bandwidth.

  python3 bench/cuda/report.py strata.json baseline.json
"""
import json, sys

s = json.load(open(sys.argv[1]))
b = json.load(open(sys.argv[2])) if len(sys.argv) > 2 else {}
H, L, QH, KVH, D, I, V = 4096, 32, 32, 8, 128, 14336, 128256
gemm = s["gemm_bf16_8192_tflops"] * 1e12
bw = s["hbm_copy_gbps_read_plus_write"] * 1e9
matmul_params = L * (H * QH * D + 2 * H * KVH * D + QH * D * H + 3 * H * I)
weight_bytes = 2 * (matmul_params + V * H + (2 * L + 1) * H)  # projections, LM head, norms (embedding: 1 row)


def attn_flops(s_len):  # causal, all layers, as the baseline counts: 4 * S^2 / 2 * heads * head_dim
    return 4 * s_len * s_len / 2 * QH * D * L


def fmt(x, d=2):
    return "n/a" if x is None else f"{x:.{d}f}"


rows = []
for S in (8192, 32768):
    ours = s.get(f"attention_S{S}_kv8_tflops")
    mha = s.get(f"attention_S{S}_kv32_tflops")
    base = b.get(f"sdpa_causal_S{S}_tflops")
    ratio = f"{ours / base:.2f}x" if ours and base else "n/a"
    alt = s.get(f"attention_S{S}_kv8_tflops_4x32")
    if alt:
        rows.append(f"| attention, causal, S={S}, 4 warps x 32 rows tiling (GQA 8 kv) | {fmt(alt, 0)} TFLOP/s | SDPA "
                    f"{fmt(base, 0)} TFLOP/s (ratio {fmt(alt / base if base else None)}x) | GEMM rate {gemm / 1e12:.0f} TFLOP/s |")
    rows.append(f"| attention, causal, S={S} (32 q heads, hd 128; GQA 8 kv / MHA 32 kv) | {fmt(ours, 0)} / {fmt(mha, 0)} TFLOP/s "
                f"| SDPA {fmt(base, 0)} TFLOP/s (ours/SDPA {ratio}) | GEMM rate {gemm / 1e12:.0f} TFLOP/s |")
for S in (32768, 1 << 20):
    ms = s.get(f"decode_attention_S{S}_ms")
    floor = 2 * 2 * KVH * S * D / bw
    rows.append(f"| decode attention, 1 query, 32 q / 8 kv heads, S={S} (flash-decoding) | {fmt(ms, 3)} ms "
                f"({fmt(s.get(f'decode_attention_S{S}_gbps'), 0)} GB/s of K+V) | — | {floor * 1e3:.3f} ms "
                f"(ours/floor {fmt(ms / 1e3 / floor if ms else None)}) |")
for S in (32768, 98304):
    t = s.get(f"ttft_S{S}_s")
    base = b.get(f"ttft_S{S}_s")
    att_rate = max(x for x in [s.get("attention_S32768_kv8_tflops", 0), b.get("sdpa_causal_S32768_tflops", 0)]) * 1e12
    gemm_flops = 2 * S * matmul_params + 2 * H * V
    floor = gemm_flops / gemm + attn_flops(S) / att_rate
    rows.append(f"| time to first token, S={S} | {fmt(t)} s | `ttft` {fmt(base)} s (ours/base "
                f"{fmt(t / base if t and base else None)}) | {floor:.2f} s (ours/floor {fmt(t / floor if t else None)}) |")
kv_bytes_4k = 2 * L * KVH * D * 4096 * 2
floor1 = (weight_bytes + kv_bytes_4k) / bw
for mode, what in (("off", "kernels launched one by one"), ("capture", "each step captured and updated")):
    t1 = s.get(f"engine_decode_b1_S4096_{mode}_tok_s")
    rows.append(f"| decode, batch 1, 4k context, engine ({what}) | {fmt(t1, 1)} tok/s | `decode` "
                f"{fmt(b.get('decode_S4096_tok_s'), 1)} tok/s | {1 / floor1:.1f} tok/s (ours/floor "
                f"{fmt(t1 * floor1 if t1 else None)}) |")
for B in (1, 2, 4, 8, 16, 32, 64):
    t = s.get(f"decode_B{B}_tok_s")
    floor = (weight_bytes + B * kv_bytes_4k) / bw
    rows.append(f"| decode step, batch {B}, 4k context (kernels, graph replay) | {fmt(t, 1)} tok/s "
                f"({fmt(s.get(f'decode_step_B{B}_graph_ms'))} ms/step; eager {fmt(s.get(f'decode_step_B{B}_eager_ms'))} ms) | — "
                f"| {B / floor:.1f} tok/s (ours/floor {fmt(t * floor / B if t else None)}) |")
print(f"Ceilings measured in the same run: cuBLAS BF16 GEMM 8192³ {gemm / 1e12:.0f} TFLOP/s, "
      f"HBM copy {bw / 1e9:.0f} GB/s (read + write); weights streamed per decode step {weight_bytes / 1e9:.2f} GB.\n")
print("| measure | Strata CUDA | PyTorch baseline (same command) | floor |")
print("|---|---|---|---|")
print("\n".join(rows))
