#!/usr/bin/env bash
# Everything that needs the GPU, in one command on the GPU machine (run from the repository root):
# the kernel and model tests (paged KV and head-wise offload included), `strata generate --backend cuda`
# against the goldens, the CUDA benchmarks and the PyTorch baseline, then the table of docs/BENCHMARKS.md
# "CUDA backend (H100)".
#   BIN=build-cuda/bin OUT=/tmp/out bash bench/cuda/run_on_gpu.sh
set -o pipefail
BIN=${BIN:-build-cuda/bin}
OUT=${OUT:-/tmp/strata-cuda}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
"$BIN/kernels_test" 2>&1 | tee "$OUT/kernels_test.log" | grep -E "^\[  (PASSED|FAILED)|tests from.*ran|Failure|actual"
for t in cuda_engine_test paged_kv_test kv_offload_test; do
  "$BIN/$t" 2>&1 | tee "$OUT/$t.log" | grep -E "^\[  (PASSED|FAILED)|ran\.|\[cuda|Failure|actual"
done
for m in llama3-tiny qwen2-tiny mistral-tiny; do
  for d in f32 bf16; do
    ids=$(python3 -c "import json; print(','.join(map(str, json.load(open('tests/data/models/$m/golden.json'))['prompt_ids'])))")
    "$BIN/strata" generate --backend cuda --dtype $d --model tests/data/models/$m --prompt-ids "$ids" \
      --max-new-tokens 24 --ignore-eos --json > "$OUT/cli_${m}_$d.json"
    python3 - "$OUT/cli_${m}_$d.json" "tests/data/models/$m/golden.json" "$m $d" <<'PY'
import json, sys
out = json.load(open(sys.argv[1]))["output_ids"]; ref = json.load(open(sys.argv[2]))["cuda"]["greedy_ids"]
diff = next((i for i, (a, b) in enumerate(zip(out, ref)) if a != b), None)
print(f"strata generate --backend cuda {sys.argv[3]}: greedy " + ("identical" if diff is None else f"differs from step {diff}"))
PY
  done
done
"$BIN/strata_cuda_engine_bench" "$OUT/strata.json" 2>&1 | tee "$OUT/bench.log"
"$BIN/strata_paged_kv_bench" --json "$OUT/paged.json" 2>&1 | tee "$OUT/paged_bench.log"
for what in "sdpa" "ttft 32768 98304" "decode 4096"; do
  PYTHONUNBUFFERED=1 python3 bench/cuda/pytorch_llama.py --out "$OUT/baseline.json" $what 2>&1 | tail -1
done
python3 bench/cuda/report.py "$OUT/strata.json" "$OUT/baseline.json" | tee "$OUT/report.md"
