# Thin wrapper over CMake and CTest; see README.md.
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= 2
STATE ?= $(CURDIR)/var

.PHONY: all deps build run test test-sanitize bench format clean

all: build

deps:
	@scripts/install-deps

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

# Runs the daemon in the foreground with its embedded defaults, state under ./var.
run: build
	mkdir -p -m 0700 $(STATE)
	$(BUILD)/daemon/agentgwd --state-dir $(STATE)/state --socket $(STATE)/run/agentgw.sock

test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DAGENTGW_SANITIZE=ON -DAGENTGW_BUILD_BENCH=OFF

test-sanitize: deps $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -j$(JOBS)

bench: build
	$(BUILD)/bench/vault_bench

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
