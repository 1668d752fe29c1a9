#!/usr/bin/env bash
# TTFT and throughput against load, prefix cache off and on: the Mooncake trace burst of gpu_cluster.sh at
# each concurrency, on a fresh cluster each time (cold caches, so every level starts alike), then one plot.
#
#   bash bench/cluster/ttft_vs_load.sh [--backend cpu|cuda] [--model DIR] [--concurrencies 1,2,4,8]
#                                      [--out DIR] [--plot FILE] [--plot-only] [-- BENCH FLAGS...]
#
# BIN_DIR as for gpu_cluster.sh (default: build/bin for cpu, .gpu/bin for cuda). --out (default
# .cluster/load-DATE) gets one gpu_cluster.sh output folder per concurrency (c1/, c2/, ...), load.dat (a row
# per concurrency: TTFT p50 and p90 in seconds and output tokens/s, cache off then on) and setup.txt.
# --plot (default OUT/ttft_vs_load.svg) is the SVG: TTFT p50/p90 and throughput against concurrency.
# --plot-only: no runs; load.dat and the plot again from an earlier --out.
# Flags after -- go to strata_cluster_bench (gpu_cluster.sh's defaults otherwise; --passes is off,on here).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BACKEND=cpu
MODEL=""
CONCURRENCIES=1,2,4,8
OUT=""
PLOT=""
PLOT_ONLY=0
BENCH_EXTRA=()

die() {
  echo "ttft_vs_load: $*" >&2
  exit 1
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --backend) BACKEND="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --concurrencies) CONCURRENCIES="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --plot) PLOT="$2"; shift 2 ;;
    --plot-only) PLOT_ONLY=1; shift ;;
    --) shift; BENCH_EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (--help lists them; bench flags go after --)" ;;
  esac
done
[[ "$CONCURRENCIES" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--concurrencies: positive integers, comma-separated"
for arg in "${BENCH_EXTRA[@]}"; do
  [[ "$arg" == --concurrency* || "$arg" == --passes* ]] && die "$arg: set by this script (use --concurrencies)"
done
command -v jq >/dev/null || die "jq is missing (deploy/install-deps.sh installs it)"
command -v gnuplot >/dev/null || die "gnuplot is missing (deploy/install-deps.sh installs gnuplot-nox)"
[[ "$BACKEND" == cpu ]] && export BIN_DIR="${BIN_DIR:-$ROOT/${BUILD_DIR:-build}/bin}"
[[ -n "$OUT" ]] || OUT="$ROOT/.cluster/load-$(date +%Y%m%d-%H%M%S)"
[[ "$OUT" = /* ]] || OUT="$PWD/$OUT"
[[ -n "$PLOT" ]] || PLOT="$OUT/ttft_vs_load.svg"
mkdir -p "$OUT"

model_flag=()
[[ -n "$MODEL" ]] && model_flag=(--model "$MODEL")
IFS=, read -r -a levels <<<"$CONCURRENCIES"
if [[ "$PLOT_ONLY" == 0 ]]; then
  for c in "${levels[@]}"; do
    echo "ttft_vs_load: concurrency $c"
    bash "$ROOT/bench/cluster/gpu_cluster.sh" --backend "$BACKEND" "${model_flag[@]}" --out "$OUT/c$c" \
      -- --concurrency "$c" --passes off,on "${BENCH_EXTRA[@]}"
  done
fi
cp "$OUT/c${levels[0]}/setup.txt" "$OUT/setup.txt"

# A row per concurrency: c, then TTFT p50, TTFT p90, output tokens/s for cache off, then for cache on.
{
  echo "# concurrency off_ttft_p50_s off_ttft_p90_s off_tokens_per_s on_ttft_p50_s on_ttft_p90_s on_tokens_per_s"
  for c in "${levels[@]}"; do
    jq -r --arg c "$c" '[$c] + ([.passes[] | select(.name == "cache off" or .name == "cache on")] | sort_by(.name)
        | map(.ttft_p50_s, .ttft_p90_s, .output_tokens_per_s)) | map(tostring) | join(" ")' "$OUT/c$c/result.json"
  done
} >"$OUT/load.dat"
cat "$OUT/load.dat"

model="$(awk '/^cluster:/ {for (i = 1; i <= NF; ++i) if ($i == "--model") print $(i + 1)}' "$OUT/setup.txt")"
machine="$(awk -F': ' '/^gpu:/ {print $2}' "$OUT/setup.txt")"
[[ -n "$machine" ]] || machine="$(awk -F': ' '/^host:/ {print $2}' "$OUT/setup.txt")"
gnuplot <<EOF
set terminal svg size 960,420 dynamic font "sans,12" background "white"
set output "$PLOT"
set multiplot layout 1,2 title "Strata, $(basename "$model") ($BACKEND backend; $machine): Mooncake trace burst, \
prefix cache off and on"
set xlabel "requests in flight"
set logscale x 2
set key top left
set grid
set ylabel "time to first token (s)"
plot "$OUT/load.dat" using 1:2 with linespoints lw 2 lc rgb "#c0392b" title "cache off, p50", \
     "" using 1:3 with linespoints dt 2 lc rgb "#c0392b" title "cache off, p90", \
     "" using 1:5 with linespoints lw 2 lc rgb "#2471a3" title "cache on, p50", \
     "" using 1:6 with linespoints dt 2 lc rgb "#2471a3" title "cache on, p90"
set ylabel "output tokens/s"
plot "$OUT/load.dat" using 1:4 with linespoints lw 2 lc rgb "#c0392b" title "cache off", \
     "" using 1:7 with linespoints lw 2 lc rgb "#2471a3" title "cache on"
unset multiplot
EOF
echo "ttft_vs_load: $OUT/load.dat, plot $PLOT"
