#!/usr/bin/env bash
# Runs the Python client's tests against a real local cluster.
#
# Creates (or reuses) a virtualenv in <repo>/target/python-venv (or
# $OPTICACHE_PYTHON_VENV; $PYTHON picks the interpreter), installs
# ./clients/python with its test and numpy extras into it, and runs pytest on
# clients/python/tests with OPTICACHE_BIN_DIR pointing to the debug binaries.
# Build those first:
#   cargo build --bin opticache-node --bin opticache-coordinator --bin opticache-dev-certs
# Extra arguments go to pytest (e.g. -k failover, -x).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${OPTICACHE_PYTHON_VENV:-$repo/target/python-venv}"
python="${PYTHON:-python3}"
export OPTICACHE_BIN_DIR="${OPTICACHE_BIN_DIR:-$repo/target/debug}"

for bin in opticache-node opticache-coordinator opticache-dev-certs; do
    if [[ ! -x "$OPTICACHE_BIN_DIR/$bin" ]]; then
        echo "run-tests.sh: $OPTICACHE_BIN_DIR/$bin is missing; build it first:" >&2
        echo "  cargo build --bin opticache-node --bin opticache-coordinator --bin opticache-dev-certs" >&2
        exit 1
    fi
done

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
# pip builds a local directory in place (so it finds ../../proto) from 21.3 on.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pip>=21.3"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$repo/clients/python[test,numpy]"

cd "$repo"
exec "$venv/bin/python" -m pytest "$repo/clients/python/tests" "$@"
