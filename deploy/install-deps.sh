#!/usr/bin/env bash
# Installs every build and test dependency of Strata from Debian 12 packages.
# Idempotent: when everything is present it only checks (no apt-get update, no network), so a second
# run takes well under a second. Runs as root, or through sudo when it is available.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libabsl-dev            # Status/StatusOr, containers, synchronization, strings
  libssl-dev             # SHA-256 (libcrypto) for fingerprints and block keys
  libopenblas-openmp-dev # CPU backend GEMMs (the OpenMP build: the backend uses OpenMP too)
  libpcre2-dev           # tokenizer pre-tokenizer regex (\p{L}, lookahead)
  libicu-dev             # NFC normalizer of tokenizers that ask for it (Qwen2)
  nlohmann-json3-dev     # config.json, tokenizer.json, safetensors headers
  libcli11-dev           # command-line parsing in the thin mains
  libgtest-dev libgmock-dev
  libbenchmark-dev
  libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev  # control planes
  libucx-dev ucx-utils   # kvstore data plane (ucx_perftest is the raw-UCX baseline)
  librocksdb-dev         # kvstore SSD tier
  libxxhash-dev          # xxh3 block payload checksums
  libcpp-httplib-dev     # /metrics endpoints and the OpenAI-compatible front door
  liburing-dev           # SSD reads of the long-context engine
  redis-server libhiredis-dev  # the Redis baseline of the kvstore benchmark
  gnuplot-nox fio        # replay plots; the SSD baseline of the kvstore benchmark
)

# The official `openai` npm package for the front door's client test (tests/scheduler/openai_client), pinned
# by deploy/node/package.json and package-lock.json into deploy/node/node_modules (git ignores it). A no-op
# when that version is there; skipped, saying why, without node and npm.
install_openai_npm() {
  local dir want have
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/node"
  want=$(sed -n 's/.*"openai": *"\([^"]*\)".*/\1/p' "$dir/package.json")
  have=""
  if [[ -f "$dir/node_modules/openai/package.json" ]]; then  # absent on a fresh clone (pipefail would stop us)
    have=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$dir/node_modules/openai/package.json" | head -1)
  fi
  if [[ -n "$want" && "$have" == "$want" ]]; then
    echo "install-deps: npm openai $have present"
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "install-deps: skip npm openai (node and npm not found; the openai client test will skip)"
    return 0
  fi
  echo "install-deps: npm ci openai $want into $dir/node_modules"
  # Not fatal: without the registry the build and every other test still work; that test skips, saying why.
  (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) ||
    echo "install-deps: warning: npm ci failed (registry unreachable?); the openai client test will skip"
}

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages present"
  install_openai_npm
  exit 0
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo_cmd=(sudo)
  else
    echo "install-deps: error=not_root missing packages: ${missing[*]}; run as root or install sudo" >&2
    exit 1
  fi
fi

echo "install-deps: installing ${missing[*]}"
# Through env, because sudo resets the environment.
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
install_openai_npm
