#!/usr/bin/env bash
# The GPU cluster benchmark in one command (docs/BENCHMARKS.md, "cluster"): a local cluster
# (deploy/local-cluster.sh up --backend cuda: scheduler with the front door, one kvstore, two workers sharing
# the GPU), the Mooncake trace burst with the prefix cache off, on, and on again (warm caches), the table,
# and the cluster down whatever happens.
#
#   BIN_DIR=.gpu/bin bash bench/cluster/gpu_cluster.sh [--model DIR] [--backend cuda|cpu] [--out DIR]
#                                                      [--workers N] [--base-port P] [-- BENCH FLAGS...]
#
# BIN_DIR (default .gpu/bin) holds strata-scheduler, strata-kvstore, strata-worker and strata_cluster_bench
# (bench/cluster/pack_cluster.sh packs them with their libraries). --model defaults to .gpu/llama3-8b-random
# on cuda, written first by make_random_llama.py when missing, and to tests/data/models/llama3-tiny on cpu.
# --out (default .cluster/bench-DATE) gets table.txt, result.json, setup.txt, each worker's metrics at the
# end (metrics-worker-N.txt) and the cluster's logs (cluster/*.log). Flags after -- go to
# strata_cluster_bench and replace its defaults of the same name, e.g.
# `-- --requests 20 --max-prompt-tokens 2048`.
# Environment (raw byte counts): HOST_CACHE_BYTES (2 GiB per worker), STAGING_BYTES (1 GiB per worker),
# KVSTORE_DRAM_BYTES (cuda 40 GiB, cpu 256 MiB), GPU_MEMORY_FRACTION (0.4: two workers' KV pools and
# weights on one GPU), BLOCK_TOKENS (128), START_TIMEOUT_S (cuda 600, cpu 120); WORKER_ARGS, KVSTORE_ARGS,
# SCHEDULER_ARGS add flags as in local-cluster.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN_DIR="${BIN_DIR:-$ROOT/.gpu/bin}"
BACKEND=cuda
MODEL=""
OUT=""
WORKERS=2
BASE_PORT=18400
BENCH_EXTRA=()

die() {
  echo "gpu_cluster: $*" >&2
  exit 1
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) MODEL="$2"; shift 2 ;;
    --backend) BACKEND="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --base-port) BASE_PORT="$2"; shift 2 ;;
    --) shift; BENCH_EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (--help lists them; bench flags go after --)" ;;
  esac
done
[[ "$BACKEND" == cuda || "$BACKEND" == cpu ]] || die "--backend must be cuda or cpu"

if [[ "$BACKEND" == cuda ]]; then
  KVSTORE_DRAM_BYTES="${KVSTORE_DRAM_BYTES:-42949672960}"
  START_TIMEOUT_S="${START_TIMEOUT_S:-600}"
  [[ -n "$MODEL" ]] || MODEL="$ROOT/.gpu/llama3-8b-random"
else
  KVSTORE_DRAM_BYTES="${KVSTORE_DRAM_BYTES:-268435456}"
  START_TIMEOUT_S="${START_TIMEOUT_S:-120}"
  [[ -n "$MODEL" ]] || MODEL="$ROOT/tests/data/models/llama3-tiny"
fi
HOST_CACHE_BYTES="${HOST_CACHE_BYTES:-2147483648}"
STAGING_BYTES="${STAGING_BYTES:-1073741824}"
GPU_MEMORY_FRACTION="${GPU_MEMORY_FRACTION:-0.4}"
BLOCK_TOKENS="${BLOCK_TOKENS:-128}"
TRACE="$ROOT/tests/data/traces/mooncake_synthetic_trace.jsonl"

[[ "$BIN_DIR" = /* ]] || BIN_DIR="$PWD/$BIN_DIR"
[[ "$MODEL" = /* ]] || MODEL="$PWD/$MODEL"
[[ -n "$OUT" ]] || OUT="$ROOT/.cluster/bench-$(date +%Y%m%d-%H%M%S)"
[[ "$OUT" = /* ]] || OUT="$PWD/$OUT"
for binary in strata-scheduler strata-kvstore strata-worker strata_cluster_bench; do
  [[ -x "$BIN_DIR/$binary" ]] || die "$BIN_DIR/$binary is missing: set BIN_DIR (bench/cluster/README.md, GPU run)"
done
mkdir -p "$OUT"

if [[ ! -f "$MODEL/config.json" ]]; then
  [[ "$MODEL" == "$ROOT/.gpu/llama3-8b-random" ]] || die "$MODEL: not a model directory (no config.json)"
  echo "gpu_cluster: writing a random Llama-3.1-8B-shaped model to $MODEL (once)"
  python3 "$ROOT/bench/cluster/make_random_llama.py" "$MODEL"
fi

# local-cluster.sh takes binaries from $BUILD_DIR/bin.
if [[ "$(basename "$BIN_DIR")" == bin ]]; then
  BUILD_DIR="$(dirname "$BIN_DIR")"
else
  mkdir -p "$OUT/build" && ln -sfn "$BIN_DIR" "$OUT/build/bin"
  BUILD_DIR="$OUT/build"
fi
export BUILD_DIR
RUN_DIR="$OUT/cluster"
worker_args="--host-cache-bytes $HOST_CACHE_BYTES --kvstore-staging-bytes $STAGING_BYTES"
[[ "$BACKEND" == cuda ]] && worker_args+=" --gpu-memory-fraction $GPU_MEMORY_FRACTION"
export WORKER_ARGS="$worker_args ${WORKER_ARGS:-}"
# The burst measures reuse across its requests: one prefix cache for every caller (the front door's default
# gives each client address its own).
export SCHEDULER_ARGS="--shared-prefix-cache ${SCHEDULER_ARGS:-}"
cluster=(bash "$ROOT/deploy/local-cluster.sh")
cluster_flags=(--run-dir "$RUN_DIR" --base-port "$BASE_PORT")

# shellcheck disable=SC2317 # the EXIT trap runs it
down() {
  "${cluster[@]}" down "${cluster_flags[@]}" || true
}
trap down EXIT
trap 'exit 130' INT TERM

# The bench's defaults; a flag given after -- replaces the default of the same name (CLI11 refuses a repeat).
served_name="$(basename "$MODEL")"
# shellcheck disable=SC2054 # off,on,on is one value
defaults=(--port "$BASE_PORT" --trace "$TRACE" --model "$MODEL" --served-model-name "$served_name"
          --passes off,on,on --offset 3700 --requests 120 --concurrency 4 --tokens-per-hash "$BLOCK_TOKENS"
          --max-prompt-tokens 8192 --max-output-tokens 32)
given=" "
for arg in "${BENCH_EXTRA[@]}"; do
  [[ "$arg" == --* ]] && given+="${arg%%=*} "
done
bench=("$BIN_DIR/strata_cluster_bench")
for ((i = 0; i < ${#defaults[@]}; i += 2)); do
  [[ "$given" == *" ${defaults[i]} "* ]] || bench+=("${defaults[i]}" "${defaults[i + 1]}")
done
bench+=("${BENCH_EXTRA[@]}" --json-out "$OUT/result.json")

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
  command -v nvidia-smi >/dev/null && echo "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | paste -sd ';')"
  echo "cluster: BUILD_DIR=$BUILD_DIR KVSTORE_ARGS='${KVSTORE_ARGS:-}' WORKER_ARGS='$WORKER_ARGS' local-cluster.sh up" \
       "--backend $BACKEND --workers $WORKERS --block-tokens $BLOCK_TOKENS --kvstore-dram-bytes $KVSTORE_DRAM_BYTES" \
       "--model $MODEL"
  echo "bench: ${bench[*]}"
} >"$OUT/setup.txt"
cat "$OUT/setup.txt"

"${cluster[@]}" up "${cluster_flags[@]}" --fresh --model "$MODEL" --backend "$BACKEND" --workers "$WORKERS" \
  --block-tokens "$BLOCK_TOKENS" --kvstore-dram-bytes "$KVSTORE_DRAM_BYTES" --timeout-s "$START_TIMEOUT_S"

status=0
"${bench[@]}" | tee "$OUT/table.txt" || status=$?
# Each worker's metrics at the end (payload slots, fetches skipped, step times), beside the table.
for ((w = 0; w < WORKERS; ++w)); do
  curl -sf "http://127.0.0.1:$((BASE_PORT + 6 + 2 * w))/metrics" >"$OUT/metrics-worker-$w.txt" || true
done
echo "gpu_cluster: table $OUT/table.txt, JSON $OUT/result.json, logs $RUN_DIR/*.log"
exit "$status"
