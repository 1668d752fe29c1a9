#!/usr/bin/env bash
# The control plane's faults across hosts in network namespaces (docs/BENCHMARKS.md, "multi-host"): requests
# lost when one of two scheduler replicas is killed during a burst, and how long the block index takes to
# converge after a partition heals. Needs root and iproute2; builds nothing (make bench, or
# ninja -C build strata_multihost_bench strata-scheduler strata-kvstore strata-worker).
#   BUILD_DIR=build bash bench/cluster/multihost.sh [--burst-s 60] [--concurrency 4] [--partitions 3] [--json]
set -euo pipefail
BUILD_DIR=${BUILD_DIR:-build}
bench="$BUILD_DIR/bin/strata_multihost_bench"
[[ -x "$bench" ]] || { echo "multihost.sh: $bench is not built" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "multihost.sh: hosts in network namespaces need root" >&2; exit 1; }
exec "$bench" "$@"
