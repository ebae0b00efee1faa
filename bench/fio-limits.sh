#!/usr/bin/env bash
# The physical limits the engine benchmarks are compared with
# (docs/benchmarks.md, ../shared/brief/limits.md), measured with fio on the
# disk the benchmarks use.
#
#   bench/fio-limits.sh [DIR]     DIR defaults to /tmp (where the benches write)
#
# Prints one line per job: bandwidth, IOPS, completion latency p50/p99 (and
# the fdatasync latency for the fdatasync job).
# Each job runs RUNTIME_S seconds on a file of FILE_SIZE; the read jobs read a
# file written beforehand, so they never read holes. Needs fio (with io_uring)
# and jq.
set -euo pipefail

DIR=${1:-/tmp}
RUNTIME_S=${RUNTIME_S:-8}
FILE_SIZE=${FILE_SIZE:-4G}
WORK=$(mktemp -d "$DIR/opticache-fio-XXXXXX")
trap 'rm -rf "$WORK"' EXIT

for tool in fio jq; do
    command -v "$tool" >/dev/null || { echo "fio-limits: $tool is missing (apt-get install -y $tool)" >&2; exit 1; }
done

# name, then fio arguments. Writes overwrite a laid-out file (fio lays it out
# first, unmeasured), except "append", which grows a fresh file as a log does.
run() {
    local name=$1
    shift
    local out
    out=$(fio --name="$name" --directory="$WORK" --filename="$name.dat" --size="$FILE_SIZE" \
        --time_based --runtime="$RUNTIME_S" --ramp_time=1 --group_reporting \
        --output-format=json "$@")
    echo "$out" | jq -r --arg name "$name" '
        def us(p): ((p // 0) / 1000 | round);
        .jobs[0] as $j
        | (if $j.write.io_bytes > 0 then $j.write else $j.read end) as $d
        | "\($name): \(($d.bw_bytes / 1e9 * 100 | round) / 100) GB/s, \(($d.iops / 100 | round) / 10)k IOPS, clat p50 \(us($d.clat_ns.percentile["50.000000"])) us, p99 \(us($d.clat_ns.percentile["99.000000"])) us"
          + (if ($j.sync.lat_ns.N // 0) > 0 then ", fdatasync p50 \(us($j.sync.lat_ns.percentile["50.000000"])) us" else "" end)'
    rm -f "$WORK/$name.dat"
}

echo "# fio $(fio --version), $(date -u +%Y-%m-%dT%H:%MZ), dir $DIR, ${RUNTIME_S}s per job"
run seq-write-1M           --rw=write --bs=1M --direct=1 --ioengine=psync --iodepth=1
run write-1M-dsync         --rw=write --bs=1M --direct=1 --sync=dsync --ioengine=psync --iodepth=1
run write-4k-dsync         --rw=write --bs=4k --direct=1 --sync=dsync --ioengine=psync --iodepth=1
run write-4k-fdatasync-append --rw=write --bs=4k --fdatasync=1 --ioengine=psync --file_append=1 --size=1G
run randread-4k-qd32       --rw=randread --bs=4k --direct=1 --ioengine=io_uring --iodepth=32
# A 4 KiB value's record (4,144 bytes with header and key) starts at an
# unaligned offset, so its read usually spans two 4 KiB blocks: between the
# 4 KiB and 8 KiB ceilings.
run randread-8k-qd32       --rw=randread --bs=8k --direct=1 --ioengine=io_uring --iodepth=32
run randread-4k-qd64       --rw=randread --bs=4k --direct=1 --ioengine=io_uring --iodepth=64
