# Strata: thin wrapper over CMake. `make demo` and `make test` work on a fresh Debian 12 machine.
BUILD_DIR   ?= build
BUILD_TYPE  ?= Release
STRATA_CUDA ?= AUTO
CMAKE_ARGS  ?=
DEMO_MODEL  ?= tests/data/models/llama3-tiny
DEMO_PROMPT ?= The quick brown fox

# make demo: a local cluster (scheduler + front door, kvstore, two CPU workers; deploy/local-cluster.sh)
# and a burst of the Mooncake trace's last 200 requests against it, prefix cache off then on.
DEMO_RUN_DIR   ?= .cluster/demo
DEMO_BASE_PORT ?= 18450
DEMO_TRACE     ?= tests/data/traces/mooncake_synthetic_trace.jsonl
DEMO_BENCH     ?= --offset 3793 --requests 200 --concurrency 4

.PHONY: all deps configure build demo demo-generate test bench clean

all: build

deps:
	@bash deploy/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DSTRATA_CUDA=$(STRATA_CUDA) $(CMAKE_ARGS)

build: configure
	cmake --build $(BUILD_DIR)

# The cluster is stopped however the burst ends (a failed request, an error, Ctrl-C).
demo: build
	@set -e; \
	trap 'BUILD_DIR=$(BUILD_DIR) deploy/local-cluster.sh down --run-dir $(DEMO_RUN_DIR)' EXIT; \
	trap 'exit 130' INT TERM; \
	BUILD_DIR=$(BUILD_DIR) deploy/local-cluster.sh up --run-dir $(DEMO_RUN_DIR) --base-port $(DEMO_BASE_PORT) \
	  --model $(DEMO_MODEL) --fresh; \
	echo "strata_cluster_bench: $(DEMO_TRACE) ($(DEMO_BENCH)), 512-token trace blocks as 16-token blocks;"; \
	echo "the same burst twice: prefix cache disabled per request, then enabled (tiny Llama, random weights)"; \
	$(BUILD_DIR)/bin/strata_cluster_bench --port $(DEMO_BASE_PORT) --trace $(DEMO_TRACE) --model $(DEMO_MODEL) \
	  --served-model-name $$(basename $(DEMO_MODEL)) $(DEMO_BENCH)

# The single-process demo: strata generate, no cluster.
demo-generate: build
	@echo "strata generate on $(DEMO_MODEL): a tiny Llama with random weights, so the text is noise;"
	@echo "its tokens are the ones Hugging Face transformers computes (see tests/data). Prompt: $(DEMO_PROMPT)"
	$(BUILD_DIR)/bin/strata generate --model $(DEMO_MODEL) --prompt "$(DEMO_PROMPT)" --max-new-tokens 32 --stats

# Serial on purpose: every engine test uses all cores through OpenMP, and two at once (ctest -j2 on
# 2 cores) ran 7x slower, their spinning thread pools fighting over the cores.
test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure

# The benchmarks that run on this machine, each with its baseline in the same run (docs/BENCHMARKS.md);
# the CUDA one runs on a GPU machine: bench/cuda/run_on_gpu.sh.
bench: build
	$(BUILD_DIR)/bin/strata_cpu_engine_bench
	$(BUILD_DIR)/bin/strata_kvstore_bench --total-mib 512 --peer-failure timeout
	$(BUILD_DIR)/bin/strata_kvstore_eviction_bench tests/data/traces/mooncake_synthetic_trace.jsonl
	$(BUILD_DIR)/bin/strata_scheduler_load_bench
	$(BUILD_DIR)/bin/strata-scheduler replay --trace tests/data/traces/mooncake_synthetic_trace.jsonl

clean:
	rm -rf $(BUILD_DIR)
