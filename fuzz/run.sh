#!/usr/bin/env bash
# `make fuzz`: fuzz/run.sh BUILD_DIR SECONDS JOBS TARGET...
# Runs each libFuzzer target for SECONDS, JOBS of them at a time (a target is one process on one core), from
# its seeds (fuzz/corpus/<target>, read only) and what earlier runs found (BUILD_DIR/corpus/<target>), and
# prints each one's stats as it ends (its whole output: BUILD_DIR/<target>.log). A crash fails the run: no
# target starts after it, the ones running finish, and its input is in BUILD_DIR/artifacts/<target>/.
set -euo pipefail
if (($# < 4)); then
  echo "usage: fuzz/run.sh BUILD_DIR SECONDS JOBS TARGET..." >&2
  exit 2
fi
export FUZZ_BUILD_DIR=$1 FUZZ_SECONDS=$2
jobs=$3
shift 3

run_one() {
  local target=$1 dir=$FUZZ_BUILD_DIR
  local log=$dir/$target.log report
  mkdir -p "$dir/corpus/$target" "$dir/artifacts/$target"
  if "$dir/bin/$target" -max_total_time="$FUZZ_SECONDS" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
       -artifact_prefix="$dir/artifacts/$target/" "$dir/corpus/$target" "fuzz/corpus/$target" >"$log" 2>&1; then
    report=$(grep -E '^(Done|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb))' "$log")
    printf '== %s: %s s (log: %s)\n%s\n' "$target" "$FUZZ_SECONDS" "$log" "$report"
  else
    report=$(tail -n 80 "$log")
    printf '%s\n== %s FAILED: the input is in %s\n' "$report" "$target" "$dir/artifacts/$target/"
    return 255  # xargs starts no further target
  fi
}
export -f run_one

echo "== ${#@} fuzz targets, ${FUZZ_SECONDS} s each, ${jobs} at a time"
printf '%s\n' "$@" | xargs -P "$jobs" -I{} bash -c 'run_one "$1"' _ {}
