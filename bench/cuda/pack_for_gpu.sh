#!/usr/bin/env bash
# Packs CUDA binaries built here for the GPU machine: the binaries named (default: the GPU suites and
# benchmarks), every shared library they load that the GPU machine lacks, each with a RUNPATH into the
# packed lib/, in one archive under .carry/ (ignored by git). bench/cluster/pack_cluster.sh does the packing.
#   BUILD_DIR=build bash bench/cuda/pack_for_gpu.sh [binary ...]        # OUT=.carry/gpu.tar.gz
# On the GPU machine, from the repository root:
#   mkdir -p /tmp/g && tar -C /tmp/g -xzf .carry/gpu.tar.gz && STRATA_TEST_DATA_DIR=$PWD/tests/data /tmp/g/bin/kernels_test
set -euo pipefail
binaries=("$@")
[ ${#binaries[@]} -gt 0 ] || binaries=(kernels_test cuda_engine_test paged_kv_test kv_offload_test strata
                                       strata_paged_kv_bench strata_cuda_engine_bench)
OUT=${OUT:-.carry/gpu.tar.gz} exec bash "$(dirname "$0")/../cluster/pack_cluster.sh" "${binaries[@]}"
