"""A 256 MiB value streamed through the cluster with bounded client memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cluster import MIB

SIZE_MIB = 256
#: The client's peak RSS may grow by this much while streaming 256 MiB.
RSS_GROWTH_MAX = 64 * MIB


def test_a_256_mib_value_streams_both_ways_in_bounded_memory(cluster, tmp_path):
    script = Path(__file__).with_name("_big_stream.py")
    out = tmp_path / "value.bin"
    run = subprocess.run(
        [sys.executable, str(script), ",".join(cluster.coordinator_addresses), str(out), str(SIZE_MIB)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["total_size"] == SIZE_MIB * MIB
    assert report["info_version"] == report["version"] > 0
    assert report["received_sha256"] == report["sent_sha256"]
    growth = report["peak_rss_after"] - report["peak_rss_before"]
    print(f"256 MiB: put {report['put_s']:.1f} s, get {report['get_s']:.1f} s, peak RSS growth {growth / MIB:.1f} MiB")
    assert growth < RSS_GROWTH_MAX, f"peak RSS grew by {growth / MIB:.1f} MiB while streaming {SIZE_MIB} MiB"
    assert not out.exists()
