# OptiCache developer entry points (GNU make).
#
#   make build   release build of the whole workspace
#   make test    the full gate CI runs: format, lints, tests, benches once, Python client tests, fuzz smoke
#   make test-python  only the Python client's tests (clients/python)
#   make bench   criterion benchmarks (figures go to docs/benchmarks.md)
#   make fmt     reformat every crate
#   make run     the local cluster of config/config.yaml in the foreground (Ctrl-C stops it)
#   make benchmark  loadgen against node-direct, the cluster and Redis in one run
#                (writes its run into docs/benchmarks.md; not part of make test)
#   make install-deps  what the tests and benchmarks need beyond Rust: redis-server
#   make certs   a development CA and certificate for the local cluster in ./certs (docs/security.md)
#   make clean   remove build outputs

CARGO ?= cargo

# Fail a recipe on the first failing command, including inside pipelines.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

.PHONY: build test test-python bench benchmark install-deps fmt run clean certs

build:
	$(CARGO) build --workspace --release

# Cheapest checks first, so a formatting slip fails in a second, not after
# the test suite. `test --bench '*'` runs every benchmark once, unmeasured, so
# the benches keep compiling and working without costing a real bench run;
# it reuses the test build (an optimised bench build of the whole workspace
# took CI several minutes more).
test:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace
	$(CARGO) test --workspace --bench '*'
	$(MAKE) --no-print-directory test-python
	bash engine/fuzz/smoke.sh

# The Python client's pytest suite against real local clusters of the debug
# binaries; installs the package into a virtualenv under target/python-venv.
test-python:
	$(CARGO) build --bin opticache-node --bin opticache-coordinator --bin opticache-dev-certs
	bash clients/python/run-tests.sh -q

bench:
	$(CARGO) bench --workspace

fmt:
	$(CARGO) fmt --all

# Builds in release mode, then starts every cache node and both coordinators
# of config/config.yaml with their logs prefixed; Ctrl-C stops them all
# cleanly. Data stays under ./data, so the next run finds it.
run:
	$(CARGO) build --release --bin opticache-node --bin opticache-coordinator --bin opticache
	scripts/run-local-cluster.sh config/config.yaml

# Release binaries, a local cluster and Redis of its own, every loadgen
# profile against each; see scripts/benchmark.sh for its settings.
benchmark: install-deps
	$(CARGO) build --release --bin opticache-node --bin opticache-coordinator --bin opticache --bin loadgen \
		--example grpc_floor
	scripts/benchmark.sh

# Debian's redis-server (the loadgen tests compare against it, make
# benchmark runs it); installed only when missing.
install-deps:
	@if command -v redis-server >/dev/null 2>&1; then \
		echo "install-deps: $$(redis-server --version | cut -d' ' -f1-3) already installed"; \
	else \
		echo "install-deps: installing redis-server (Debian package)"; \
		sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq redis-server >/dev/null; \
		redis-server --version; \
	fi

# Development TLS material for the local cluster (127.0.0.1, localhost, ::1):
# ca.pem, ca.key, cluster.pem, cluster.key. See docs/security.md.
certs:
	$(CARGO) run --release --quiet --bin opticache-dev-certs -- --out certs

clean:
	$(CARGO) clean
