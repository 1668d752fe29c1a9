#!/usr/bin/env bash
# Packs the cluster's binaries for the GPU machine (which has no gRPC, RocksDB or UCX): strata-scheduler,
# strata-kvstore, strata-worker, strata_cluster_bench and strata (or the binaries named), every shared
# library they load but glibc and the CUDA driver/runtime/cuBLAS (the GPU machine has those), and UCX's
# transport modules, which libucs dlopens from <its dir>/ucx and ldd does not list. Every file gets a RUNPATH
# into the packed lib/ (binaries $ORIGIN/../lib, libraries $ORIGIN, UCX modules $ORIGIN and $ORIGIN/..), so libraries
# that only other libraries need resolve there too. One archive under .carry/ (ignored by git).
#   BUILD_DIR=build bash bench/cluster/pack_cluster.sh [binary ...]      # OUT=.carry/cluster.tar.gz
# On the GPU machine, from the repository root:
#   mkdir -p .gpu && tar -C .gpu -xzf .carry/cluster.tar.gz && BIN_DIR=.gpu/bin bash bench/cluster/gpu_cluster.sh
set -euo pipefail
BUILD_DIR=${BUILD_DIR:-build}
OUT=${OUT:-.carry/cluster.tar.gz}
UCX_MODULE_DIR=${UCX_MODULE_DIR:-/usr/lib/x86_64-linux-gnu/ucx}
binaries=("$@")
[ ${#binaries[@]} -gt 0 ] || binaries=(strata-scheduler strata-kvstore strata-worker strata_cluster_bench strata)

# The GPU machine's own: glibc, and CUDA's driver, runtime and cuBLAS (bench/cuda/pack_for_gpu.sh leaves the same).
system_lib() {
  case "$(basename "$1")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libcuda.so*|libcudart.so*|libcublas*) return 0 ;;
  esac
  return 1
}
copy_deps() {  # the libraries $1 loads, into lib/ (UCX modules that others need stay in lib/ucx)
  ldd "$1" | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
    system_lib "$lib" || [ "$(dirname "$lib")" -ef "$UCX_MODULE_DIR" ] || cp -nL "$lib" "$stage/lib/"
  done
}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib/ucx"
for b in "${binaries[@]}"; do
  [ -x "$BUILD_DIR/bin/$b" ] || { echo "pack_cluster: $BUILD_DIR/bin/$b is missing (build it, or set BUILD_DIR)" >&2; exit 1; }
  cp "$BUILD_DIR/bin/$b" "$stage/bin/"
  copy_deps "$BUILD_DIR/bin/$b"
done
if [ -d "$UCX_MODULE_DIR" ]; then
  # The module files keep their names (libuct_cma.so.0 ...: libucs asks for its own suffix) and links.
  find "$UCX_MODULE_DIR" -maxdepth 1 -name '*.so*' -exec cp -P {} "$stage/lib/ucx/" \;
  for module in "$stage"/lib/ucx/*.so*; do
    [ -L "$module" ] || copy_deps "$module"
  done
else
  echo "pack_cluster: no $UCX_MODULE_DIR: UCX runs with its built-in transports only" >&2
fi

# shellcheck disable=SC2016 # $ORIGIN is for the loader
{
  for f in "$stage"/bin/*; do patchelf --set-rpath '$ORIGIN/../lib:/usr/local/cuda/lib64' "$f"; done
  for f in "$stage"/lib/*.so*; do patchelf --set-rpath '$ORIGIN' "$f"; done
  for f in "$stage"/lib/ucx/*.so*; do [ -L "$f" ] || patchelf --set-rpath '$ORIGIN:$ORIGIN/..' "$f"; done
}

# Check: every library a packed file loads is packed, or is the GPU machine's own.
outside=$(for f in "$stage"/bin/* "$stage"/lib/*.so* "$stage"/lib/ucx/*.so*; do
            ldd "$f" | awk '$3 ~ /^\// {print $3}'
          done | sort -u | grep -v "^$stage/" | while read -r lib; do system_lib "$lib" || echo "$lib"; done)
if [ -n "$outside" ]; then
  echo "pack_cluster: these resolve outside the package: $outside" >&2
  exit 1
fi
mkdir -p "$(dirname "$OUT")"
tar -C "$stage" -czf "$OUT" bin lib
libs=("$stage"/lib/*.so*)
modules=("$stage"/lib/ucx/*.so*)
echo "pack_cluster: $OUT ($(du -h "$OUT" | cut -f1)): ${binaries[*]}, ${#libs[@]} libraries, ${#modules[@]} UCX module files"
