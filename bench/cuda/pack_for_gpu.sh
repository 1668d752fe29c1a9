#!/usr/bin/env bash
# Packs CUDA binaries built here for the GPU machine: the binaries named (default: the GPU suites and
# benchmarks) and every shared library they load that the GPU machine may lack (all but glibc and the
# CUDA runtime libraries, which it has), into one compressed archive under .carry/ (ignored by git), with
# RPATH $ORIGIN/../lib so that nothing needs LD_LIBRARY_PATH there.
#   BUILD_DIR=build bash bench/cuda/pack_for_gpu.sh [binary ...]
# On the GPU machine, from the repository root:
#   mkdir -p .gpu && tar -C .gpu -xzf .carry/gpu.tar.gz && .gpu/bin/kernels_test
set -euo pipefail
BUILD_DIR=${BUILD_DIR:-build}
OUT=${OUT:-.carry/gpu.tar.gz}
binaries=("$@")
[ ${#binaries[@]} -gt 0 ] || binaries=(kernels_test cuda_engine_test paged_kv_test kv_offload_test strata
                                       strata_paged_kv_bench strata_cuda_engine_bench)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
for b in "${binaries[@]}"; do
  cp "$BUILD_DIR/bin/$b" "$stage/bin/"
  ldd "$BUILD_DIR/bin/$b" | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libcuda.so*|libcudart.so*|libcublas*) ;;
      *) cp -nL "$lib" "$stage/lib/" ;;
    esac
  done
done
for f in "$stage"/bin/*; do patchelf --set-rpath '$ORIGIN/../lib:/usr/local/cuda/lib64' "$f"; done
mkdir -p "$(dirname "$OUT")"
tar -C "$stage" -czf "$OUT" bin lib
du -h "$OUT"
