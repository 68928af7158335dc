# The two commands of the README: `make demo` and `make test`.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all deps build test unit integration demo bench bench-wan format clean

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

# Every test: unit tests, then integration tests with real dwcpd processes.
test: build | $(S3_TEST_SERVER)/node_modules $(E2E_DIR)/node_modules
	cd $(BUILD_DIR) && ctest --output-on-failure --timeout 600 -j 2 -LE integration
	cd $(BUILD_DIR) && ctest --output-on-failure --timeout 600 -L integration

unit: build | $(S3_TEST_SERVER)/node_modules
	cd $(BUILD_DIR) && ctest --output-on-failure -LE integration

integration: build | $(E2E_DIR)/node_modules
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
