#!/usr/bin/env bash
# A whole Strata cluster as local processes: one strata-scheduler (with the OpenAI-compatible front door),
# one strata-kvstore (DRAM + SSD tier) and N strata-workers (CPU backend by default), on 127.0.0.1.
#
#   deploy/local-cluster.sh up [--model DIR] [--backend cpu|cuda] [--workers N] [--policy P] ...
#   deploy/local-cluster.sh status
#   deploy/local-cluster.sh down
#
# Pid files, logs and the kvstore's SSD directory live in the run directory (.cluster/ by default,
# git-ignored). `up` waits until every process answers /healthz and the scheduler lists the kvstore and
# every worker; on any failure it prints the failing process's log, stops what it started and exits 1.
# `up` on a running cluster says so and changes nothing; `down` sends SIGTERM, then SIGKILL after
# --stop-timeout-s. Binaries come from $BUILD_DIR/bin (default build/: `make build`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-build}"
[[ "$BUILD_DIR" = /* ]] || BUILD_DIR="$ROOT/$BUILD_DIR"
BIN="$BUILD_DIR/bin"

RUN_DIR="$ROOT/.cluster"
MODEL="$ROOT/tests/data/models/llama3-tiny"
BACKEND=cpu
SERVED_NAME=""
POLICY=cache-aware
WORKERS=2
BASE_PORT=18400
BLOCK_TOKENS=16
THREADS=1
LEASE_MS=5000
HEARTBEAT_MS=1000
KVSTORE_DRAM_BYTES=$((256 << 20))
START_TIMEOUT_S=90
STOP_TIMEOUT_S=10
FRESH=0

usage() {
  cat <<EOF
usage: deploy/local-cluster.sh up|down|status [options]

  --model DIR             model directory (default: tests/data/models/llama3-tiny)
  --backend cpu|cuda      workers' engine backend (default: cpu)
  --served-model-name N   the OpenAI model name (default: the model directory's name)
  --policy P              scheduler placement: cache-aware, round-robin, least-loaded (default: cache-aware)
  --workers N             workers to start (default: 2)
  --base-port P           first of the 5 + 2N ports used (default: 18400)
  --block-tokens N        tokens per KV block (default: 16)
  --threads N             CPU threads per worker (default: 1)
  --lease-ms MS           scheduler lease of a silent holder (default: 5000)
  --heartbeat-ms MS       heartbeat interval (default: 1000)
  --kvstore-dram-bytes B  the kvstore's DRAM tier (default: 256 MiB)
  --run-dir DIR           pid files, logs, SSD tier (default: .cluster)
  --fresh                 (up) empty the kvstore's SSD tier first
  --timeout-s S           (up) how long to wait for health (default: 90)
  --stop-timeout-s S      (down) SIGTERM, then SIGKILL after this (default: 10)

Ports: HTTP front door = base, scheduler gRPC = base+1, scheduler metrics = base+2, kvstore gRPC =
base+3, kvstore metrics = base+4, worker i gRPC = base+5+2i, worker i metrics = base+6+2i.
Environment: BUILD_DIR (default build), SCHEDULER_ARGS, KVSTORE_ARGS, WORKER_ARGS (extra flags).
The front door has no API keys here and gives each client address its own prefix cache;
SCHEDULER_ARGS=--shared-prefix-cache gives every caller one (make demo does).
EOF
}

die() {
  echo "local-cluster: $*" >&2
  exit 1
}

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
COMMAND="$1"
shift
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) MODEL="$2"; shift 2 ;;
    --backend) BACKEND="$2"; shift 2 ;;
    --served-model-name) SERVED_NAME="$2"; shift 2 ;;
    --policy) POLICY="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --base-port) BASE_PORT="$2"; shift 2 ;;
    --block-tokens) BLOCK_TOKENS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --lease-ms) LEASE_MS="$2"; shift 2 ;;
    --heartbeat-ms) HEARTBEAT_MS="$2"; shift 2 ;;
    --kvstore-dram-bytes) KVSTORE_DRAM_BYTES="$2"; shift 2 ;;
    --run-dir) RUN_DIR="$2"; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    --timeout-s) START_TIMEOUT_S="$2"; shift 2 ;;
    --stop-timeout-s) STOP_TIMEOUT_S="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (--help lists them)" ;;
  esac
done
[[ "$RUN_DIR" = /* ]] || RUN_DIR="$PWD/$RUN_DIR"
[[ "$MODEL" = /* ]] || MODEL="$PWD/$MODEL"
[[ -n "$SERVED_NAME" ]] || SERVED_NAME="$(basename "$MODEL")"
for number in "$WORKERS" "$BASE_PORT" "$BLOCK_TOKENS" "$THREADS" "$LEASE_MS" "$HEARTBEAT_MS" "$START_TIMEOUT_S" \
              "$STOP_TIMEOUT_S" "$KVSTORE_DRAM_BYTES"; do
  [[ "$number" =~ ^[0-9]+$ ]] || die "'$number' is not a number"
done

HTTP_PORT=$BASE_PORT
SCHEDULER_PORT=$((BASE_PORT + 1))
SCHEDULER_METRICS_PORT=$((BASE_PORT + 2))
KVSTORE_PORT=$((BASE_PORT + 3))
KVSTORE_METRICS_PORT=$((BASE_PORT + 4))
worker_port() { echo $((BASE_PORT + 5 + 2 * $1)); }
worker_metrics_port() { echo $((BASE_PORT + 6 + 2 * $1)); }

# --- processes: a pid file and a log per name, in the run directory ---

pid_of() {  # prints the pid of a running process of ours named $1, or nothing
  local file="$RUN_DIR/$1.pid" pid
  [[ -f "$file" ]] || return 0
  pid="$(cat "$file")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  # The pid must still be the binary we started (pids are reused).
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "strata-"; then
    echo "$pid"
  fi
}

names() {  # every process name of the cluster described by the run directory (or the flags)
  if [[ -f "$RUN_DIR/cluster.env" ]]; then
    # shellcheck disable=SC1091
    (source "$RUN_DIR/cluster.env" && echo "$NAMES")
  else
    local out="scheduler kvstore" i
    for ((i = 0; i < WORKERS; i++)); do out+=" worker-$i"; done
    echo "$out"
  fi
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

healthy() {  # $1: metrics/health port
  curl -sf -m 2 "http://127.0.0.1:$1/healthz" >/dev/null 2>&1
}

scheduler_holders() {  # $1: kind (worker, kvstore): live holders the scheduler lists
  curl -sf -m 2 "http://127.0.0.1:$SCHEDULER_METRICS_PORT/metrics" 2>/dev/null |
    awk -v kind="$1" '$1 == "strata_scheduler_holders{kind=\"" kind "\"}" { print int($2) }'
}

log_tail() {
  echo "---- last lines of $RUN_DIR/$1.log ----" >&2
  tail -n 25 "$RUN_DIR/$1.log" >&2 || true
  echo "----" >&2
}

start() {  # $1: name, then the command; extra environment goes in front through `env`
  local name="$1"
  shift
  setsid "$@" >"$RUN_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/$name.pid"
}

stop_all() {
  local name pid pids=() deadline
  for name in $(names); do
    pid="$(pid_of "$name")"
    if [[ -n "$pid" ]]; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$name:$pid")
    fi
  done
  deadline=$((SECONDS + STOP_TIMEOUT_S))
  for entry in "${pids[@]}"; do
    name="${entry%%:*}"
    pid="${entry##*:}"
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "local-cluster: $name (pid $pid) still running after ${STOP_TIMEOUT_S}s: SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "stopped $name (pid $pid)"
  done
  for name in $(names); do rm -f "$RUN_DIR/$name.pid"; done
  rm -f "$RUN_DIR/cluster.env"
}

# Waits until `$2...` (a command) succeeds, the process $1 dies, or the start deadline passes.
wait_until() {
  local name="$1"
  shift
  while ! "$@"; do
    if [[ -z "$(pid_of "$name")" ]]; then
      echo "local-cluster: $name exited during start-up" >&2
      log_tail "$name"
      return 1
    fi
    if ((SECONDS >= START_DEADLINE)); then
      echo "local-cluster: $name not ready after ${START_TIMEOUT_S}s (waiting for: $*)" >&2
      log_tail "$name"
      return 1
    fi
    sleep 0.2
  done
}

fail_up() {
  echo "local-cluster: start-up failed; stopping what was started" >&2
  stop_all >&2
  exit 1
}

holders_at_least() {  # $1 kind, $2 count
  local n
  n="$(scheduler_holders "$1")"
  [[ -n "$n" && "$n" -ge "$2" ]]
}

# --- commands ---

cmd_up() {
  local name running=() missing=()
  for name in $(names); do
    if [[ -n "$(pid_of "$name")" ]]; then running+=("$name"); else missing+=("$name"); fi
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    echo "local-cluster: already up (deploy/local-cluster.sh down first to restart it with other flags)"
    cmd_status
    return
  fi
  if [[ ${#running[@]} -gt 0 ]]; then
    echo "local-cluster: ${running[*]} of an earlier cluster still running, ${missing[*]} not: stopping them first"
    stop_all
  fi

  local binary
  for binary in strata-scheduler strata-kvstore strata-worker; do
    [[ -x "$BIN/$binary" ]] || die "$BIN/$binary is missing: run \`make build\` (or point BUILD_DIR at a build)"
  done
  [[ -f "$MODEL/config.json" ]] || die "$MODEL: not a model directory (no config.json); give --model DIR"
  [[ "$BACKEND" == cpu || "$BACKEND" == cuda ]] || die "--backend must be cpu or cuda"

  local port ports=("$HTTP_PORT:front door HTTP" "$SCHEDULER_PORT:scheduler gRPC" "$SCHEDULER_METRICS_PORT:scheduler metrics"
                     "$KVSTORE_PORT:kvstore gRPC" "$KVSTORE_METRICS_PORT:kvstore metrics") i
  for ((i = 0; i < WORKERS; i++)); do
    ports+=("$(worker_port "$i"):worker-$i gRPC" "$(worker_metrics_port "$i"):worker-$i metrics")
  done
  for entry in "${ports[@]}"; do
    port="${entry%%:*}"
    port_in_use "$port" && die "port $port (${entry#*:}) is in use: stop what holds it (ss -ltnp 'sport = :$port') or pick --base-port"
  done

  mkdir -p "$RUN_DIR"
  [[ $FRESH -eq 1 ]] && rm -rf "$RUN_DIR/kvstore-ssd"
  # The workers' shared KV MAC secret (--kv-mac-key-file): made once per run directory, readable by its
  # owner only, so that one worker's kvstore blocks verify on another (and across restarts of the cluster).
  if [[ ! -s "$RUN_DIR/kv-mac.key" ]]; then
    (umask 077 && head -c 48 /dev/urandom | base64 >"$RUN_DIR/kv-mac.key")
  fi
  local all="scheduler kvstore"
  for ((i = 0; i < WORKERS; i++)); do all+=" worker-$i"; done
  cat >"$RUN_DIR/cluster.env" <<EOF
NAMES="$all"
HTTP_PORT=$HTTP_PORT
SCHEDULER_PORT=$SCHEDULER_PORT
SCHEDULER_METRICS_PORT=$SCHEDULER_METRICS_PORT
KVSTORE_PORT=$KVSTORE_PORT
KVSTORE_METRICS_PORT=$KVSTORE_METRICS_PORT
BASE_PORT=$BASE_PORT
WORKERS=$WORKERS
MODEL="$MODEL"
SERVED_NAME="$SERVED_NAME"
POLICY=$POLICY
BACKEND=$BACKEND
BLOCK_TOKENS=$BLOCK_TOKENS
EOF
  START_DEADLINE=$((SECONDS + START_TIMEOUT_S))

  # shellcheck disable=SC2086
  start scheduler "$BIN/strata-scheduler" serve --grpc-address "127.0.0.1:$SCHEDULER_PORT" \
    --metrics-host 127.0.0.1 --metrics-port "$SCHEDULER_METRICS_PORT" --http-host 127.0.0.1 --http-port "$HTTP_PORT" \
    --model-dir "$MODEL" --served-model-name "$SERVED_NAME" --policy "$POLICY" \
    --lease-ms "$LEASE_MS" --heartbeat-ms "$HEARTBEAT_MS" ${SCHEDULER_ARGS:-}
  wait_until scheduler healthy "$SCHEDULER_METRICS_PORT" || fail_up

  # shellcheck disable=SC2086
  start kvstore "$BIN/strata-kvstore" --host 127.0.0.1 --port "$KVSTORE_PORT" --metrics-port "$KVSTORE_METRICS_PORT" \
    --dram-bytes "$KVSTORE_DRAM_BYTES" --ssd-dir "$RUN_DIR/kvstore-ssd" \
    --scheduler "127.0.0.1:$SCHEDULER_PORT" --advertise-address "127.0.0.1:$KVSTORE_PORT" --holder-id kvstore-0 \
    ${KVSTORE_ARGS:-}
  for ((i = 0; i < WORKERS; i++)); do
    # shellcheck disable=SC2086
    start "worker-$i" env OMP_WAIT_POLICY=passive "$BIN/strata-worker" --model "$MODEL" --backend "$BACKEND" \
      --grpc-address "127.0.0.1:$(worker_port "$i")" --advertise-address "127.0.0.1:$(worker_port "$i")" \
      --metrics-host 127.0.0.1 --metrics-port "$(worker_metrics_port "$i")" --scheduler "127.0.0.1:$SCHEDULER_PORT" \
      --kvstore "127.0.0.1:$KVSTORE_PORT" --block-tokens "$BLOCK_TOKENS" --threads "$THREADS" \
      --served-model-name "$SERVED_NAME" --worker-id "worker-$i" --kv-mac-key-file "$RUN_DIR/kv-mac.key" \
      ${WORKER_ARGS:-}
  done
  wait_until kvstore healthy "$KVSTORE_METRICS_PORT" || fail_up
  for ((i = 0; i < WORKERS; i++)); do wait_until "worker-$i" healthy "$(worker_metrics_port "$i")" || fail_up; done
  wait_until scheduler healthy "$HTTP_PORT" || fail_up
  wait_until scheduler holders_at_least kvstore 1 || fail_up
  wait_until scheduler holders_at_least worker "$WORKERS" || fail_up
  echo "local-cluster: up in $RUN_DIR (policy $POLICY, $WORKERS workers, backend $BACKEND, model $SERVED_NAME)"
  cmd_status
  echo "try: curl -s 127.0.0.1:$HTTP_PORT/v1/completions -H 'Content-Type: application/json' \\"
  echo "       -d '{\"model\": \"$SERVED_NAME\", \"prompt\": \"The quick brown fox\", \"max_tokens\": 16}'"
}

cmd_status() {
  if [[ ! -f "$RUN_DIR/cluster.env" ]]; then
    echo "local-cluster: no cluster in $RUN_DIR (deploy/local-cluster.sh up starts one)"
    return 1
  fi
  # shellcheck disable=SC1091
  source "$RUN_DIR/cluster.env"
  local name pid port health bad=0 i
  printf '%-10s %-8s %-22s %s\n' process pid address health
  for name in $NAMES; do
    pid="$(pid_of "$name")"
    case "$name" in
      scheduler) port=$SCHEDULER_METRICS_PORT; address="127.0.0.1:$SCHEDULER_PORT" ;;
      kvstore) port=$KVSTORE_METRICS_PORT; address="127.0.0.1:$KVSTORE_PORT" ;;
      worker-*) i="${name#worker-}"; port=$(worker_metrics_port "$i"); address="127.0.0.1:$(worker_port "$i")" ;;
    esac
    if [[ -z "$pid" ]]; then
      health="not running (log: $RUN_DIR/$name.log)"
      bad=1
    elif healthy "$port"; then
      health="ok (/healthz on :$port)"
    else
      health="UNHEALTHY (/healthz on :$port)"
      bad=1
    fi
    printf '%-10s %-8s %-22s %s\n' "$name" "${pid:--}" "$address" "$health"
  done
  if [[ -n "$(pid_of scheduler)" ]]; then
    if healthy "$HTTP_PORT"; then health="ok"; else health="UNHEALTHY"; bad=1; fi
    printf '%-10s %-8s %-22s %s\n' "front door" "" "http://127.0.0.1:$HTTP_PORT" "$health (model $SERVED_NAME)"
    echo "scheduler lists: $(scheduler_holders worker) worker(s), $(scheduler_holders kvstore) kvstore(s); policy $POLICY"
  fi
  return $bad
}

case "$COMMAND" in
  up) cmd_up ;;
  down)
    if [[ -z "$(for n in $(names); do pid_of "$n"; done)" ]]; then
      rm -f "$RUN_DIR"/*.pid "$RUN_DIR/cluster.env" 2>/dev/null || true
      echo "local-cluster: nothing running in $RUN_DIR"
    else
      stop_all
    fi
    ;;
  status) cmd_status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
