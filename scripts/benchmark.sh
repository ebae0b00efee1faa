#!/usr/bin/env bash
# `make benchmark`: the published comparison, in one run on this machine.
#
# Starts a local cluster (three nodes, two coordinators, replication_factor
# 2, write_quorum 1, durability sync) from a config of its own, and a Redis
# server with appendonly yes + appendfsync always (our `sync`), then runs
# every loadgen profile against node-direct (node 1 of that cluster), the
# cluster (both coordinators), Redis and the gRPC floor (the node API served
# from memory by tonic alone, node/examples/grpc_floor.rs: what any server
# behind this gRPC stack can reach here), with every server's CPU time
# measured over the measured window (loadgen --server-pid), and writes:
#   target/benchmark/RUN/*.json, *.hgrm   every report
#   docs/benchmarks.md                     between its BEGIN/END make benchmark
#                                          markers: the tables with ratios against
#                                          Redis, the machine and the exact commands
#   docs/benchmarks/PROFILE.svg            latency by percentile per profile,
#                                          one line per target and operation
# Everything it started is stopped on exit, also on failure or Ctrl-C, and
# the servers' data is deleted (the reports stay).
#
# Settings (environment): BENCH_SECONDS (measured time per run, default 10),
# BENCH_WARMUP_SECONDS (2), BENCH_CONCURRENCY (50), BENCH_KEYS (20000; the
# 1 MiB and 64 MiB profiles use fewer), BENCH_PROFILES (all),
# BENCH_PORT_BASE (46000: nodes +1..+3, coordinators +51/+52, the floor +60,
# Redis +379).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=target/release
seconds=${BENCH_SECONDS:-10}
warmup=${BENCH_WARMUP_SECONDS:-2}
concurrency=${BENCH_CONCURRENCY:-50}
keys=${BENCH_KEYS:-20000}
profiles=${BENCH_PROFILES:-write-heavy read-heavy mixed batch-read params large}
base=${BENCH_PORT_BASE:-46000}
run=target/benchmark/$(date -u +%Y%m%dT%H%M%SZ)
doc=docs/benchmarks.md
begin_marker='<!-- BEGIN make benchmark output: written by scripts/benchmark.sh, do not edit -->'
end_marker='<!-- END make benchmark output -->'
out_md=$run/make-benchmark.md
mkdir -p "$run" docs/benchmarks
# Checked first, so a run is never measured only to find nowhere to write it.
grep -qxF "$begin_marker" "$doc" && grep -qxF "$end_marker" "$doc" || {
    echo "benchmark: $doc lacks the lines '$begin_marker' and '$end_marker'" >&2
    exit 1
}

command -v redis-server >/dev/null || {
    echo "benchmark: redis-server is missing; run 'make install-deps' first" >&2
    exit 1
}

nodes=("127.0.0.1:$((base + 1))" "127.0.0.1:$((base + 2))" "127.0.0.1:$((base + 3))")
coordinators="127.0.0.1:$((base + 51)),127.0.0.1:$((base + 52))"
redis_port=$((base + 379))
floor_address="127.0.0.1:$((base + 60))"
config=$run/config.yaml
{
    echo "coordinator:"
    echo "  primary: 127.0.0.1:$((base + 51))"
    echo "  secondary: 127.0.0.1:$((base + 52))"
    echo "cache_nodes:"
    for i in 0 1 2; do
        echo "  - address: ${nodes[$i]}"
        echo "    disk_path: $PWD/$run/node$((i + 1))"
        echo "    metrics_address: 127.0.0.1:0"
    done
    echo "replication_factor: 2"
    echo "write_quorum: 1"
    echo "node:"
    echo "  durability: sync"
} >"$config"

pids=()
stop_all() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    # The servers' data (about 13 GB a run): only the reports are kept.
    rm -rf "$run"/node1 "$run"/node2 "$run"/node3 "$run"/appendonlydir
}
trap stop_all EXIT

OPTICACHE_BIN_DIR=$bin scripts/run-local-cluster.sh "$config" >"$run/cluster.log" 2>&1 &
pids+=($!)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync always \
    --dir "$PWD/$run" >"$run/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
"$bin/examples/grpc_floor" "$floor_address" >"$run/floor.log" 2>&1 &
floor_pid=$!
pids+=("$floor_pid")

# Ready: every node UP at the coordinators, and Redis answering.
deadline=$((SECONDS + 60))
until "$bin/opticache" --coordinators "$coordinators" status 2>/dev/null | grep -cw up | grep -qx 3; do
    if [ $SECONDS -gt $deadline ]; then
        echo "benchmark: the cluster did not come up; log: $run/cluster.log" >&2
        exit 1
    fi
    sleep 0.2
done
until redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG; do
    if [ $SECONDS -gt $deadline ]; then
        echo "benchmark: redis did not come up; log: $run/redis.log" >&2
        exit 1
    fi
    sleep 0.2
done

until grep -q "serving on" "$run/floor.log"; do
    if [ $SECONDS -gt $deadline ]; then
        echo "benchmark: the gRPC floor server did not come up; log: $run/floor.log" >&2
        exit 1
    fi
    sleep 0.2
done
# The processes whose CPU time each run reports (loadgen --server-pid).
node1_pid=$(pgrep -f "opticache-node --config $config --address ${nodes[0]}\$" || true)
mapfile -t cluster_pids < <(pgrep -f -- "--config $config --address")
[ -n "$node1_pid" ] && [ "${#cluster_pids[@]}" -eq 5 ] || {
    echo "benchmark: cannot find the cluster's processes (node 1: '$node1_pid', all: ${cluster_pids[*]})" >&2
    exit 1
}
# The floor serves only unary calls: no streamed profile.
targets_of() {
    case $1 in
    large) echo redis node cluster ;;
    *) echo redis floor node cluster ;;
    esac
}
server_pid_flags() {
    local pid
    for pid in "$@"; do printf -- '--server-pid %s ' "$pid"; done
}

commands=()
for profile in $profiles; do
    profile_keys=$keys
    profile_concurrency=$concurrency
    case $profile in
    params) profile_keys=256 ;;
    large)
        profile_keys=8
        profile_concurrency=2
        ;;
    esac
    for name in $(targets_of "$profile"); do
        case $name in
        redis) target="redis://127.0.0.1:$redis_port" watch=$(server_pid_flags "$redis_pid") ;;
        floor) target="node://$floor_address" watch=$(server_pid_flags "$floor_pid") ;;
        node) target="node://${nodes[0]}" watch=$(server_pid_flags "$node1_pid") ;;
        cluster) target="opticache://$coordinators" watch=$(server_pid_flags "${cluster_pids[@]}") ;;
        esac
        # shellcheck disable=SC2206 # $watch is flags and numbers only
        cmd=("$bin/loadgen" --target "$target" --profile "$profile" --keys "$profile_keys"
            --concurrency "$profile_concurrency" --duration "${seconds}s" --warmup "${warmup}s" --preload
            --namespace "bench-$profile" --json "$run/$profile-$name.json" --hgrm "$run/hgrm-$profile-$name"
            $watch)
        commands+=("${cmd[*]}")
        echo "benchmark: $profile against $name" >&2
        # Exit 3 means the run finished with errors: they are in the report.
        "${cmd[@]}" >"$run/$profile-$name.txt" 2>&1 || [ $? -eq 3 ]
    done
done

{
    echo "### The latest run"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)."
    echo "Machine: $(nproc) vCPU, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r);"
    echo "client, three nodes, two coordinators and Redis share it. Redis: appendonly yes,"
    echo "appendfsync always; nodes: durability sync; cluster: replication_factor 2, write_quorum 1."
    echo "Node-direct is node 1 of the same cluster. The floor is node/examples/grpc_floor.rs: the node API"
    echo "served by tonic from a locked in-memory map, no engine, no disk, no shards: the most any server"
    echo "behind this gRPC stack reaches here with this client. One run of each (the JSON reports are in $run)."
    echo "Under each table, CPU per call over the measured window: loadgen's own, and the server's"
    echo "(for the cluster: its five processes together). A call is one operation of any kind."
    echo
    for profile in $profiles; do
        echo "#### $profile"
        echo
        echo "![latency by percentile](benchmarks/$profile.svg)"
        echo
        reports=()
        for name in $(targets_of "$profile"); do reports+=("$run/$profile-$name.json"); done
        "$bin/loadgen" compare "${reports[@]}"
        echo
    done
    echo "#### Commands"
    echo
    echo '```sh'
    printf '%s\n' "${commands[@]}"
    echo '```'
} >"$out_md"
for profile in $profiles; do
    reports=()
    for name in $(targets_of "$profile"); do reports+=("$run/$profile-$name.json"); done
    "$bin/loadgen" plot --out "docs/benchmarks/$profile.svg" "${reports[@]}"
done
# The generated part of the doc is replaced; everything around it is kept.
awk -v begin="$begin_marker" -v end="$end_marker" -v gen="$out_md" '
    $0 == begin { print; while ((getline line < gen) > 0) print line; skipping = 1; next }
    $0 == end { skipping = 0 }
    !skipping { print }
' "$doc" >"$run/benchmarks.md"
mv "$run/benchmarks.md" "$doc"
echo "benchmark: wrote the run into $doc and docs/benchmarks/*.svg (reports in $run)" >&2
