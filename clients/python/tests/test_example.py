"""examples/serve.py against the cluster, fed by examples/publish.py."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from cluster import DEADLINE_S

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def publish(cluster, model: str, version: int) -> dict:
    run = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "publish.py"),
            "--coordinators",
            ",".join(cluster.coordinator_addresses),
            "--model",
            model,
            "--version",
            str(version),
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert run.returncode == 0, run.stderr
    event = json.loads(run.stdout.strip().splitlines()[-1])
    assert event["event"] == "published" and event["version"] == version
    return event


def serve_command(cluster, model: str, *extra: str) -> list:
    return [
        sys.executable,
        str(EXAMPLES / "serve.py"),
        "--coordinators",
        ",".join(cluster.coordinator_addresses),
        "--model",
        model,
        *extra,
    ]


def test_serve_once_loads_the_latest_of_two_published_versions(cluster, ns):
    first = publish(cluster, ns, 1)
    second = publish(cluster, ns, 2)
    assert first["digest"] != second["digest"]
    run = subprocess.run(serve_command(cluster, ns, "--once"), capture_output=True, text=True, timeout=DEADLINE_S)
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    loaded = [e for e in events if e["event"] == "loaded"]
    assert len(loaded) == 1
    assert loaded[0]["version"] == 2 and loaded[0]["digest"] == second["digest"]
    assert loaded[0]["arrays"] == 3 and len(loaded[0]["prediction"]) == 8
    assert events[-1] == {"event": "done", "iterations": 1, "version": 2, "served": 1}


def test_serve_once_without_parameters_fails(cluster, ns):
    run = subprocess.run(serve_command(cluster, ns, "--once"), capture_output=True, text=True, timeout=DEADLINE_S)
    assert run.returncode == 1
    assert "no published parameters" in run.stderr


def test_serve_switches_to_a_newer_version_while_running(cluster, ns):
    publish(cluster, ns, 1)
    # Polls every 20 ms for at most 1500 iterations (30 s), until version 2.
    server = subprocess.Popen(
        serve_command(cluster, ns, "--iterations", "1500", "--interval", "0.02", "--stop-at-version", "2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: "queue.Queue[str]" = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in server.stdout], daemon=True)
    reader.start()

    def next_event(deadline: float) -> dict:
        line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        return json.loads(line)

    try:
        deadline = time.monotonic() + DEADLINE_S
        event = next_event(deadline)
        assert event["event"] == "loaded" and event["version"] == 1, event
        second = publish(cluster, ns, 2)
        event = next_event(deadline)
        assert event["event"] == "loaded" and event["version"] == 2, event
        assert event["digest"] == second["digest"]
        done = next_event(deadline)
        assert done["event"] == "done" and done["version"] == 2 and done["iterations"] < 1500, done
        assert server.wait(timeout=DEADLINE_S) == 0, server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
