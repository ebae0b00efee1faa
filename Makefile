# OptiCache developer entry points (GNU make).
#
#   make build   release build of the whole workspace
#   make test    the full gate CI runs: format, lints, tests, benches once, fuzz smoke
#   make bench   criterion benchmarks (figures go to docs/benchmarks.md)
#   make fmt     reformat every crate
#   make run     the local cluster (arrives with the coordinator, issue 4)
#   make clean   remove build outputs

CARGO ?= cargo

# Fail a recipe on the first failing command, including inside pipelines.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

.PHONY: build test bench fmt run clean

build:
	$(CARGO) build --workspace --release

# Cheapest checks first, so a formatting slip fails in a second, not after
# the test suite. `bench -- --test` runs every benchmark once, unmeasured, so
# the benches keep compiling and working without costing a real bench run.
test:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace
	$(CARGO) bench --workspace -- --test
	bash engine/fuzz/smoke.sh

bench:
	$(CARGO) bench --workspace

fmt:
	$(CARGO) fmt --all

# There is no coordinator yet, so there is no cluster to start. Say so and
# fail rather than pretend: a script waiting on `make run` must not proceed.
run:
	@echo "make run: not available yet." >&2
	@echo "It starts the local cluster (two coordinators, three cache nodes, data under ./data)," >&2
	@echo "and arrives with the coordinator (issue 4). Today the workspace holds only the" >&2
	@echo "storage engine (engine/) and the API contract (proto/); see README.md." >&2
	@exit 1

clean:
	$(CARGO) clean
