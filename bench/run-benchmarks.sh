#!/usr/bin/env bash
# Runs the engine benchmarks RUNS times, each run preceded by the fio limits
# on the same disk, and prints the medians over the runs (docs/benchmarks.md).
#
#   bench/run-benchmarks.sh [RUNS] [OUT]
#
# RUNS defaults to 3; OUT (default target/bench-runs/<UTC time>) receives per
# run: machine.txt (load before and after), fio.txt, bench.log, criterion/
# (criterion's output, via CRITERION_HOME) and summary.json; and medians.txt.
# Extra criterion arguments (a filter) can be given in BENCH_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${1:-3}
OUT=${2:-target/bench-runs/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

cargo bench -p opticache-engine --bench put --bench get --bench reopen --no-run
for i in $(seq 1 "$RUNS"); do
    d="$OUT/run$i"
    mkdir -p "$d"
    { echo "start $(date -u +%FT%TZ) $(uptime)"; cat /proc/pressure/io 2>/dev/null | head -1; } > "$d/machine.txt"
    bench/fio-limits.sh > "$d/fio.txt"
    # shellcheck disable=SC2086 # BENCH_ARGS is a list of words on purpose
    CRITERION_HOME="$d/criterion" cargo bench -p opticache-engine --bench put --bench get --bench reopen \
        -- ${BENCH_ARGS:-} > "$d/bench.log" 2>&1
    { echo "end $(date -u +%FT%TZ) $(uptime)"; cat /proc/pressure/io 2>/dev/null | head -1; } >> "$d/machine.txt"
    bench/summarize.py run "$d" > "$d/summary.json"
    echo "run $i done: $d"
done
bench/summarize.py medians "$OUT"/run*/summary.json | tee "$OUT/medians.txt"
