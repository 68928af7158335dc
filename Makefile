# The two commands of the README: `make demo` and `make test`.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
# -g1 (line tables, no types or variables): file:line in profiles and backtraces, and a
# quarter less compile time than -g, which `make test` needs on two cores.
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG"
# The sanitizer build (make test-all, make test-asan; see below).
ASAN_DIR ?= build-asan
ASAN_CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1"

.PHONY: all deps build test unit integration demo bench bench-wan format clean guest
.PHONY: test-all test-asan fuzz fuzz-corpus

all: build

deps:
	bash scripts/install-deps.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja $(CMAKE_FLAGS)

# The web dashboard's npm packages (web/package-lock.json), which CMake's Vite build needs;
# installed only when missing.
WEB_DIR := web
$(WEB_DIR)/node_modules:
	cd $(WEB_DIR) && npm ci --no-audit --no-fund

build: deps $(BUILD_DIR)/build.ninja | $(WEB_DIR)/node_modules
	cmake --build $(BUILD_DIR) -j $(JOBS)

# The S3-compatible server the continuous-profiling tests upload to (npm, locked); installed
# only when missing.
S3_TEST_SERVER := tools/s3-test-server
$(S3_TEST_SERVER)/node_modules:
	cd $(S3_TEST_SERVER) && npm ci --no-audit --no-fund

# playwright-core for the dashboard's end-to-end test (tests/e2e/, Debian's chromium).
E2E_DIR := tests/e2e
$(E2E_DIR)/node_modules:
	cd $(E2E_DIR) && npm ci --no-audit --no-fund

# The small QEMU test guest (Debian's kernel, busybox and a memory-dirtying workload) that the
# qemu driver's tests boot: scripts/build-guest.sh, a few seconds, no root.
guest: deps
	bash scripts/build-guest.sh $(BUILD_DIR)/guest

# Every test: unit tests, then integration tests with real dwcpd processes.
test: build guest | $(S3_TEST_SERVER)/node_modules $(E2E_DIR)/node_modules
	bash scripts/run-tests.sh $(BUILD_DIR)

# The same, then the unit tests again under ASan + UBSan from a second build ($(ASAN_DIR),
# below) that scripts/run-tests.sh compiles at the lowest priority while the first two run.
# Not part of `make test` yet: on two cores it takes the run past its 30-minute CI budget
# (docs/fuzzing.md).
test-all: build guest $(ASAN_DIR)/build.ninja | $(S3_TEST_SERVER)/node_modules $(E2E_DIR)/node_modules
	bash scripts/run-tests.sh $(BUILD_DIR) $(ASAN_DIR) $(JOBS)

# The unit tests under AddressSanitizer + UndefinedBehaviorSanitizer (docs/fuzzing.md): a
# second build in $(ASAN_DIR), -O1 with line tables only (-g1: reports keep file:line, the
# build takes ~30% less CPU than -g), the unit tests only (no benches, no dwcpd), the web
# dashboard taken from $(BUILD_DIR) rather than built again. Any report fails the test.
$(ASAN_DIR)/build.ninja:
	cmake -S . -B $(ASAN_DIR) -G Ninja $(ASAN_CMAKE_FLAGS) -DDWCP_SANITIZE=ON \
	  -DDWCP_WEB_ASSETS_CC=$(abspath $(BUILD_DIR))/web/web_assets_data.cc

test-asan: build $(ASAN_DIR)/build.ninja | $(S3_TEST_SERVER)/node_modules
	cmake --build $(ASAN_DIR) -j $(JOBS) --target dwcp_unit_tests
	cd $(ASAN_DIR) && ctest --output-on-failure --timeout 900 -j 2 -L unit

# libFuzzer targets (fuzz/, docs/fuzzing.md), built with clang in $(FUZZ_DIR); each runs for
# FUZZ_SECONDS from its seeds in fuzz/corpus/. Fails on any crash, hang, OOM or report.
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
$(FUZZ_DIR)/build.ninja:
	cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DDWCP_FUZZ=ON \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g"

fuzz: deps $(FUZZ_DIR)/build.ninja
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzzers
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run_fuzzers.sh $(FUZZ_DIR) $(FUZZ_TARGETS)

# Rewrites the binary seeds of fuzz/corpus/ with the real encoders (fuzz/make_corpus.cc).
fuzz-corpus: deps $(FUZZ_DIR)/build.ninja
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target make_fuzz_corpus
	$(FUZZ_DIR)/fuzz/make_fuzz_corpus fuzz/corpus

unit: build | $(S3_TEST_SERVER)/node_modules
	cd $(BUILD_DIR) && ctest --output-on-failure -LE integration

integration: build guest | $(E2E_DIR)/node_modules
	cd $(BUILD_DIR) && ctest --output-on-failure -L integration

# A local three-node cluster migrating synthetic VMs; Ctrl-C stops it. STACK=1 also runs
# Prometheus and Alertmanager with the shipped rules, scraping the demo.
DEMO_FLAGS ?=
STACK ?=
demo: build
	$(BUILD_DIR)/dwcp demo $(if $(filter 1 yes true,$(STACK)),--stack) $(DEMO_FLAGS)

bench: build
	bash bench/migrate_bench.sh

# WAN benchmarks through linkem (needs root) and on loopback: bench/wan_bench.sh. Pick
# scenarios with WAN_BENCH="wan lossy loopback rss" (default: all); EXTRA_FLAGS reach dwcpd.
WAN_BENCH ?=
bench-wan: build
	BUILD_DIR=$(BUILD_DIR) bash bench/wan_bench.sh $(WAN_BENCH)

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD_DIR)
