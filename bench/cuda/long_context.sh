#!/usr/bin/env bash
# Issue 13's measurements on the GPU machine, in one detached run (the 1M-token row takes ~20 minutes):
# the offload exactness tests on CUDA, the disk's O_DIRECT bandwidth (dd), then strata_long_context_bench
# at 32k and 128k (offloaded vs all in HBM, in the same process), the SSD tier at 32k, and 1M tokens.
#   BIN=build/bin LOG=/tmp/lc bash bench/cuda/long_context.sh      # progress: tail -f /tmp/lc/progress.log
set -o pipefail
BIN=${BIN:-build/bin}
LOG=${LOG:-/tmp/strata-long-context}
SSD=${SSD:-$LOG/ssd}
mkdir -p "$LOG" "$SSD"
exec > >(tee -a "$LOG/progress.log") 2>&1
echo "== $(date -u +%T) $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader); host $(free -g | awk '/Mem/{print $2}') GiB"
df -h "$SSD" | tail -1
echo "== $(date -u +%T) disk: dd with O_DIRECT (4 GiB write, then read)"
dd if=/dev/zero of="$SSD/dd.bin" bs=16M count=256 oflag=direct 2>&1 | tail -1
dd if="$SSD/dd.bin" of=/dev/null bs=16M iflag=direct 2>&1 | tail -1
rm -f "$SSD/dd.bin"
echo "== $(date -u +%T) tests"
"$BIN/kv_offload_test" 2>&1 | grep -E "^\[  (PASSED|FAILED|SKIPPED)|Failure|actual|not available" | head -20
"$BIN/cuda_engine_test" 2>&1 | grep -E "^\[  (PASSED|FAILED)|Failure" | head -10
B="$BIN/strata_long_context_bench --json $LOG/rows.jsonl"
echo "== $(date -u +%T) 32k: all in HBM vs 75% of the heads in host memory"
$B --prompt-tokens 32768 --decode-tokens 8 --gpu-kv-budget-gib 1.25 --host-kv-budget-gib 16 --compare-all-gpu --label offload_32k
echo "== $(date -u +%T) 128k: all in HBM vs 75% of the heads in host memory"
$B --prompt-tokens 131072 --decode-tokens 16 --gpu-kv-budget-gib 5 --host-kv-budget-gib 32 --compare-all-gpu --label offload_128k
echo "== $(date -u +%T) 32k: the SSD tier (host budget for bounce buffers only)"
$B --prompt-tokens 32768 --decode-tokens 4 --gpu-kv-budget-gib 1.25 --host-kv-budget-gib 0.3 --ssd-budget-gib 8 \
   --ssd-dir "$SSD" --label ssd_32k
echo "== $(date -u +%T) 1M tokens"
$B --prompt-tokens 1048576 --decode-tokens 16 --gpu-kv-budget-gib ${GPU_KV_GIB:-44} --host-kv-budget-gib 100 \
   --label offload_1m
echo "== $(date -u +%T) done"
