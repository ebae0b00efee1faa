#!/usr/bin/env python3
"""Turns one `cargo bench -p opticache-engine` run into the figures of
docs/benchmarks.md, and several runs into their medians.

    bench/summarize.py run DIR            one run of bench/run-benchmarks.sh:
                                          criterion's medians (DIR/criterion),
                                          the FIGURE lines of DIR/bench.log and
                                          the fio lines of DIR/fio.txt, as JSON
    bench/summarize.py medians RUN.json...  the median of each figure over
                                          runs, as a text table

Criterion stores, per benchmark, the median time of one iteration
(`new/estimates.json`, nanoseconds). An iteration is one put or get for the
put and get benchmarks (so ops/s = 1e9 / ns; for 1 MiB puts also GB/s,
decimal), and one open for the reopen and recovery benchmarks (ms).
"""

import json
import os
import re
import statistics
import sys

# group -> (unit, bytes per iteration or None)
GROUPS = {
    "put_4KiB_sync": ("ops/s", None),
    "put_1MiB_sync": ("GB/s", 1 << 20),
    "get_100B_hot": ("ops/s", None),
    "get_4KiB_cold": ("ops/s", None),
    "reopen_clean": ("ms", None),
    "recovery_crash": ("ms", None),
}


def one_run(run_dir):
    log_path = os.path.join(run_dir, "bench.log")
    criterion_dir = os.path.join(run_dir, "criterion")
    out = {}
    for group, (unit, nbytes) in GROUPS.items():
        gdir = os.path.join(criterion_dir, group)
        if not os.path.isdir(gdir):
            continue
        for root, _dirs, files in os.walk(gdir):
            if "estimates.json" not in files or os.path.basename(root) != "new":
                continue
            bench = os.path.relpath(os.path.dirname(root), criterion_dir)
            with open(os.path.join(root, "estimates.json")) as f:
                ns = json.load(f)["median"]["point_estimate"]
            if unit == "ms":
                value = ns / 1e6
            elif unit == "GB/s":
                value = nbytes / ns
            else:
                value = 1e9 / ns
            out[bench] = {"value": value, "unit": unit}
    figures = {}
    with open(log_path, errors="replace") as f:
        for line in f:
            m = re.match(r"FIGURE (.+?): (.*)", line.strip())
            if m:
                figures[m.group(1)] = m.group(2)
    fio_path = os.path.join(run_dir, "fio.txt")
    if os.path.exists(fio_path):
        with open(fio_path) as f:
            for line in f:
                m = re.match(r"([\w-]+): ([\d.]+) GB/s, ([\d.]+)k IOPS", line)
                if m:
                    out["fio/" + m.group(1) + "/GB/s"] = {"value": float(m.group(2)), "unit": "GB/s"}
                    out["fio/" + m.group(1) + "/kIOPS"] = {"value": float(m.group(3)), "unit": "kIOPS"}
    return {"benchmarks": out, "figures": figures}


def first_number(text):
    m = re.search(r"[-+]?\d+(\.\d+)?", text)
    return float(m.group(0)) if m else None


def medians(paths):
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append(json.load(f))
    names = sorted({b for r in runs for b in r["benchmarks"]})
    print(f"{'benchmark':<48} {'median':>12} unit   runs")
    for name in names:
        vals = [r["benchmarks"][name]["value"] for r in runs if name in r["benchmarks"]]
        unit = next(r["benchmarks"][name]["unit"] for r in runs if name in r["benchmarks"])
        shown = ", ".join(f"{v:.4g}" for v in vals)
        print(f"{name:<48} {statistics.median(vals):>12.4g} {unit:<6} [{shown}]")
    figs = sorted({k for r in runs for k in r["figures"]})
    for k in figs:
        texts = [r["figures"][k] for r in runs if k in r["figures"]]
        nums = [n for n in (first_number(t) for t in texts) if n is not None]
        med = f"{statistics.median(nums):.4g}" if nums else "-"
        print(f"FIGURE {k}: median of first numbers {med}; runs: " + " | ".join(texts))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        json.dump(one_run(sys.argv[2]), sys.stdout, indent=1)
        print()
    elif len(sys.argv) >= 3 and sys.argv[1] == "medians":
        medians(sys.argv[2:])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
