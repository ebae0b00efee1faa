#!/usr/bin/env bash
# Runs the engine benchmarks RUNS times, each run preceded by the fio limits
# on the same disk, and prints the medians over the runs (docs/benchmarks.md).
#
#   bench/run-benchmarks.sh [RUNS] [OUT]
#
# RUNS defaults to 3; OUT (default target/bench-runs/<UTC time>) receives per
# run: machine.txt (engine revision, load before and after), fio.txt,
# bench.log, criterion/ (criterion's output, via CRITERION_HOME) and
# summary.json; and medians.txt. The benches are built once, before the first
# run. Extra criterion arguments (a filter) can be given in BENCH_ARGS. Needs
# jq.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${1:-3}
OUT=${2:-target/bench-runs/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# Build once and run the same executables in every run: the engine may change
# under a long series, and `cargo bench` would rebuild between runs.
mapfile -t BINS < <(cargo bench -p opticache-engine --bench put --bench get --bench reopen --no-run \
    --message-format=json | jq -r 'select(.reason == "compiler-artifact" and .executable != null) | .executable')
[ "${#BINS[@]}" -eq 3 ] || { echo "run-benchmarks: expected 3 bench executables, got: ${BINS[*]}" >&2; exit 1; }
REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- engine/src 2>/dev/null || echo '+uncommitted engine/src')"
for i in $(seq 1 "$RUNS"); do
    d="$OUT/run$i"
    mkdir -p "$d"
    { echo "engine $REVISION, built $(date -u +%FT%TZ -r "${BINS[0]}")"
      echo "start $(date -u +%FT%TZ) $(uptime)"; head -1 /proc/pressure/io 2>/dev/null || true; } > "$d/machine.txt"
    bench/fio-limits.sh > "$d/fio.txt"
    : > "$d/bench.log"
    for bin in "${BINS[@]}"; do
        # shellcheck disable=SC2086 # BENCH_ARGS is a list of words on purpose
        CRITERION_HOME="$d/criterion" "$bin" --bench ${BENCH_ARGS:-} >> "$d/bench.log" 2>&1
    done
    { echo "end $(date -u +%FT%TZ) $(uptime)"; head -1 /proc/pressure/io 2>/dev/null || true; } >> "$d/machine.txt"
    bench/summarize.py run "$d" > "$d/summary.json"
    echo "run $i done: $d"
done
bench/summarize.py medians "$OUT"/run*/summary.json | tee "$OUT/medians.txt"
