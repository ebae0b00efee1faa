#!/usr/bin/env bash
# Starts the local cluster of config/config.yaml in the foreground: every
# cache node, then both coordinators, each process's log lines prefixed with
# its name. Ctrl-C (or SIGTERM) stops all of them gracefully; a second Ctrl-C
# kills them. Data lives where the config says (./data/cacheN by default), so
# a second run finds the same data.
#
# Usage: scripts/run-local-cluster.sh [CONFIG] (default config/config.yaml)
# Binaries come from target/release (`make run` builds them first).
set -euo pipefail

config=${1:-config/config.yaml}
bin=${OPTICACHE_BIN_DIR:-target/release}
pids=()

# The addresses, straight from the file: `address:` lines under cache_nodes,
# and coordinator.primary / coordinator.secondary.
mapfile -t nodes < <(awk '/^cache_nodes:/{n=1;next} /^[^ #-]/{n=0} n && $1=="-" && $2=="address:" {print $3}' "$config")
primary=$(awk '/^coordinator:/{c=1;next} /^[^ #]/{c=0} c && $1=="primary:" {print $2}' "$config")
secondary=$(awk '/^coordinator:/{c=1;next} /^[^ #]/{c=0} c && $1=="secondary:" {print $2}' "$config")

start() { # name, command...
    local name=$1
    shift
    # Each server and its log prefixer run in a session of their own: a
    # Ctrl-C on the terminal reaches only this script, which stops every
    # server with one SIGTERM (a server that got the terminal's SIGINT as
    # well would take the TERM as a second signal and exit at once), and the
    # prefixers live until the servers' last lines are out. The prefix runs
    # in its own process: a line is printed whole, unbuffered.
    setsid "$@" > >(exec setsid sed -u "s/^/[$name] /") 2>&1 &
    pids+=($!)
}

stopping=0
stop_all() {
    if [ "$stopping" = 1 ]; then
        echo "[run] second interrupt: killing everything" >&2
        kill -KILL "${pids[@]}" 2>/dev/null || true
        exit 130
    fi
    stopping=1
    echo "[run] stopping (Ctrl-C again to kill)" >&2
    kill -TERM "${pids[@]}" 2>/dev/null || true
}
trap stop_all INT TERM

i=1
for address in "${nodes[@]}"; do
    start "node$i" "$bin/opticache-node" --config "$config" --address "$address"
    i=$((i + 1))
done
start coord-primary "$bin/opticache-coordinator" --config "$config" --address "$primary"
if [ -n "$secondary" ]; then
    start coord-standby "$bin/opticache-coordinator" --config "$config" --address "$secondary"
fi
echo "[run] ${#nodes[@]} nodes and the coordinators are starting; clients: $primary${secondary:+,$secondary}" >&2

status=0
for pid in "${pids[@]}"; do
    while true; do
        rc=0
        wait "$pid" || rc=$?
        # A trapped signal interrupts `wait` (status > 128) while the server
        # is still draining: wait for it again.
        if [ "$rc" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then
            continue
        fi
        break
    done
    if [ "$rc" -ne 0 ]; then
        status=$rc
    fi
done
echo "[run] all stopped" >&2
exit "$status"
