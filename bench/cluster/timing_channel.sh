#!/usr/bin/env bash
# The prefix cache's timing side channel across callers (CVE-2025-46570) in each tenancy mode of the front
# door, against a local cluster of tiny-model CPU workers (deploy/local-cluster.sh): one table row per mode,
# the ROC AUC of TTFT telling a victim's prompt from a control (docs/BENCHMARKS.md, "Timing side channel").
#
#   bash bench/cluster/timing_channel.sh [--trials N] [--prompt-tokens N] [--base-port P]
#
# Binaries from $BUILD_DIR/bin (default build/): strata-scheduler, strata-kvstore, strata-worker and
# strata_timing_channel_bench. Each mode gets a cluster of its own, stopped before the next starts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-build}"
[[ "$BUILD_DIR" = /* ]] || BUILD_DIR="$ROOT/$BUILD_DIR"
export BUILD_DIR
BENCH="$BUILD_DIR/bin/strata_timing_channel_bench"
TRIALS=24
PROMPT_TOKENS=1536
BASE_PORT=18600
while [[ $# -gt 0 ]]; do
  case "$1" in
    --trials) TRIALS="$2"; shift 2 ;;
    --prompt-tokens) PROMPT_TOKENS="$2"; shift 2 ;;
    --base-port) BASE_PORT="$2"; shift 2 ;;
    *) echo "timing_channel.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x "$BENCH" ]] || { echo "timing_channel.sh: $BENCH is missing (cmake --build build)" >&2; exit 1; }

RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/strata-timing.XXXXXX")"
cluster=(bash "$ROOT/deploy/local-cluster.sh")
current=""
# shellcheck disable=SC2317 # the EXIT trap runs it
cleanup() {
  [[ -n "$current" ]] && "${cluster[@]}" down --run-dir "$current" >/dev/null 2>&1 || true
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
printf 'sk-timing-victim tenant-victim\nsk-timing-attacker tenant-attacker\n' >"$RUN_DIR/api-keys"

# $1: the row's name, $2: the scheduler's extra flags; the rest: the bench's flags (who is who).
mode() {
  local label="$1" scheduler_args="$2"
  shift 2
  current="$RUN_DIR/cluster-$RANDOM"
  SCHEDULER_ARGS="$scheduler_args" "${cluster[@]}" up --run-dir "$current" --base-port "$BASE_PORT" --fresh \
    >"$current.up.log" 2>&1 || { cat "$current.up.log" >&2; exit 1; }
  "$BENCH" --port "$BASE_PORT" --trials "$TRIALS" --prompt-tokens "$PROMPT_TOKENS" --label "$label" "$@"
  "${cluster[@]}" down --run-dir "$current" >/dev/null
  current=""
}

echo "timing channel: $TRIALS trials of $PROMPT_TOKENS-token prompts, 2 CPU workers (llama3-tiny), 1 kvstore;"
echo "$(hostname), $(nproc) cores; AUC: TTFT of the victim's prompt vs a control, as the attacker / the victim sees it"
echo "| mode                               | trials | AUC across callers | AUC same caller | victim's prompt ms | control ms | own again ms | attacker cached |"
echo "|---|---|---|---|---|---|---|---|"
mode "keyless, default (per client)" "" --victim-address 127.0.0.2 --attacker-address 127.0.0.3
mode "keyless, default, one address" "" --victim-user alice --attacker-user mallory
mode "keyless, --shared-prefix-cache" "--shared-prefix-cache" --victim-address 127.0.0.2 --attacker-address 127.0.0.3
mode "API keys, two tenants" "--api-keys $RUN_DIR/api-keys" --victim-key sk-timing-victim \
  --attacker-key sk-timing-attacker
