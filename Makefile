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

# Sanitizer and fuzz builds (no GPU; fuzz/README.md). The ASan+UBSan suites and the fuzzers share one tree,
# built with clang (libFuzzer needs it): one build serves `make test-asan` and `make fuzz`. TSan builds with
# the default compiler (gcc, as `make build`).
ASAN_BUILD_DIR ?= build-asan
TSAN_BUILD_DIR ?= build-tsan
FUZZ_BUILD_DIR ?= $(ASAN_BUILD_DIR)
FUZZ_SECONDS   ?= 60
# Fuzzers running at once: each is one process on one core.
FUZZ_JOBS      ?= 2
# ctest -j for `make test` and `make test-asan`: the tests that use every core are RUN_SERIAL
# (tests/CMakeLists.txt, ALL_CORES), so they still run alone.
TEST_JOBS      ?= 2
FUZZERS        := safetensors_fuzzer checkpoint_index_fuzzer config_fuzzer tokenizer_json_fuzzer \
                  tokenizer_codec_fuzzer kvstore_service_fuzzer scheduler_service_fuzzer frontdoor_request_fuzzer
# ctest -E regex of tests the ASan suite leaves out (empty: none); CI sets it (.ci/run says which and why).
ASAN_EXCLUDE   ?=
# The test binaries TSan runs: those whose threads meet only in our code, std and absl. Not the gRPC
# suites: Debian's libgrpc is not instrumented, so every hand-off through its completion queues reads as a
# race in grpcpp's inline code (scheduler_service_test: 80 reports, all inside gRPC's call machinery).
TSAN_TESTS     ?= common_test daemon_test scheduler_test kvstore_unit_test frontdoor_unit_test
# Left out under TSan: StoreRace writes to RocksDB from six threads at once, and Debian's RocksDB (not
# instrumented) hands one writer's batch to another inside its write group through atomics TSan cannot
# see (11 reports, all inside that hand-off). It runs in the plain and ASan suites.
TSAN_GTEST_FILTER ?= -StoreRace.*
# Every process a test spawns inherits these: the daemons report too. UBSan findings fail (no recovery is
# also compiled in); leaks fail at exit; reports are symbolized.
SANITIZER_ENV  := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:check_initialization_order=1:strict_init_order=1 \
                  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
                  TSAN_OPTIONS=second_deadlock_stack=1 \
                  ASAN_SYMBOLIZER_PATH=$$(command -v llvm-symbolizer)
# The ASan+UBSan tree: clang, the sanitizers on every target, the fuzz targets beside the test suites.
ASAN_CONFIGURE  = cmake -S . -B $(1) -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=OFF \
                  -DSTRATA_SANITIZE=address,undefined -DSTRATA_FUZZ=ON \
                  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ $(CMAKE_ARGS)

.PHONY: all deps configure build demo demo-generate test bench clean test-asan test-tsan fuzz fuzz-build

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
	BUILD_DIR=$(BUILD_DIR) SCHEDULER_ARGS="--shared-prefix-cache $(SCHEDULER_ARGS)" \
	  deploy/local-cluster.sh up --run-dir $(DEMO_RUN_DIR) --base-port $(DEMO_BASE_PORT) --model $(DEMO_MODEL) --fresh; \
	echo "strata_cluster_bench: $(DEMO_TRACE) ($(DEMO_BENCH)), 512-token trace blocks as 16-token blocks;"; \
	echo "the same burst twice: prefix cache disabled per request, then enabled (tiny Llama, random weights)"; \
	$(BUILD_DIR)/bin/strata_cluster_bench --port $(DEMO_BASE_PORT) --trace $(DEMO_TRACE) --model $(DEMO_MODEL) \
	  --served-model-name $$(basename $(DEMO_MODEL)) $(DEMO_BENCH)

# The single-process demo: strata generate, no cluster.
demo-generate: build
	@echo "strata generate on $(DEMO_MODEL): a tiny Llama with random weights, so the text is noise;"
	@echo "its tokens are the ones Hugging Face transformers computes (see tests/data). Prompt: $(DEMO_PROMPT)"
	$(BUILD_DIR)/bin/strata generate --model $(DEMO_MODEL) --prompt "$(DEMO_PROMPT)" --max-new-tokens 32 --stats

# Every engine test uses all cores through OpenMP, and two at once on 2 cores ran 7x slower, their spinning
# thread pools fighting over the cores: those are RUN_SERIAL (ALL_CORES in tests/CMakeLists.txt), and
# ctest runs every other test TEST_JOBS at a time.
test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j$(TEST_JOBS)

# The benchmarks that run on this machine, each with its baseline in the same run (docs/BENCHMARKS.md);
# the CUDA one runs on a GPU machine: bench/cuda/run_on_gpu.sh.
bench: build
	$(BUILD_DIR)/bin/strata_cpu_engine_bench
	$(BUILD_DIR)/bin/strata_kvstore_bench --total-mib 512 --peer-failure timeout
	$(BUILD_DIR)/bin/strata_kvstore_eviction_bench tests/data/traces/mooncake_synthetic_trace.jsonl
	$(BUILD_DIR)/bin/strata_scheduler_load_bench
	$(BUILD_DIR)/bin/strata-scheduler replay --trace tests/data/traces/mooncake_synthetic_trace.jsonl

# Every test that needs no GPU, under AddressSanitizer and UndefinedBehaviorSanitizer (STRATA_CUDA=OFF), and
# each fuzz target's corpus replayed once (the fuzzers build in this tree too).
test-asan: deps
	$(call ASAN_CONFIGURE,$(ASAN_BUILD_DIR))
	$(SANITIZER_ENV) cmake --build $(ASAN_BUILD_DIR)
	$(SANITIZER_ENV) ctest --test-dir $(ASAN_BUILD_DIR) --output-on-failure -j$(TEST_JOBS) \
	  $(if $(ASAN_EXCLUDE),-E '$(ASAN_EXCLUDE)')

# The test binaries in TSAN_TESTS under ThreadSanitizer, with libabsl's locks made visible to it
# (fuzz/tsan_absl_sync.cc), OpenMP on one thread (libgomp is not instrumented either) and UCX's memory
# hooks off (they patch mmap/munmap under TSan's own interceptors: the store's tests crashed in RocksDB).
test-tsan: deps
	cmake -S . -B $(TSAN_BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=OFF \
	  -DSTRATA_SANITIZE=thread $(CMAKE_ARGS)
	cmake --build $(TSAN_BUILD_DIR) --target strata_tsan_absl_sync $(TSAN_TESTS)
	@set -e; for t in $(TSAN_TESTS); do echo "== $$t"; \
	  $(SANITIZER_ENV) OMP_NUM_THREADS=1 UCX_MEM_EVENTS=no LD_PRELOAD=$(CURDIR)/$(TSAN_BUILD_DIR)/libstrata_tsan_absl_sync.so \
	    $(TSAN_BUILD_DIR)/bin/$$t --gtest_filter='$(TSAN_GTEST_FILTER)'; done

# The fuzz targets in the ASan tree: after `make test-asan` they are already built.
fuzz-build: deps
	$(call ASAN_CONFIGURE,$(FUZZ_BUILD_DIR))
	cmake --build $(FUZZ_BUILD_DIR) --target $(FUZZERS)

# Each fuzzer for FUZZ_SECONDS, FUZZ_JOBS at a time, from its seeds (fuzz/corpus/<target>, read only) and
# what earlier runs found ($(FUZZ_BUILD_DIR)/corpus/<target>). A crash fails the run (no new target starts);
# its input is in $(FUZZ_BUILD_DIR)/artifacts/<target>/ (fuzz/README.md says what to do with it).
fuzz: fuzz-build
	@$(SANITIZER_ENV) bash fuzz/run.sh $(FUZZ_BUILD_DIR) $(FUZZ_SECONDS) $(FUZZ_JOBS) $(FUZZERS)

clean:
	rm -rf $(BUILD_DIR)
