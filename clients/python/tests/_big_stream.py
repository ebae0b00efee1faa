"""Run by test_streams.py in a fresh interpreter, so that its peak RSS says
what streaming 256 MiB costs and nothing else: writes a value with
put_stream from a generator, reads it back with get_stream to a file, and
prints JSON with both hashes, the RSS before and the peak RSS after."""

import hashlib
import json
import os
import random
import resource
import sys
import time

from opticache import Client

MIB = 1 << 20


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def start_measuring() -> tuple:
    """The RSS now, as the baseline, with the peak reset to it where Linux
    allows (ru_maxrss can carry the peak of the parent process that
    started us, which says nothing about this one)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak RSS, to the current RSS
        return "VmHWM", _status_kib("VmRSS") * 1024
    except OSError:
        return "ru_maxrss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss_bytes(how: str) -> int:
    if how == "VmHWM":
        return _status_kib("VmHWM") * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def main() -> None:
    coordinators, out_path, size_mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Client(coordinators.split(","), timeout_s=30.0) as client:
        client.put("warm-up", b"x", namespace="big-stream")  # channels, threads, stubs
        how, before = start_measuring()
        sent = hashlib.sha256()
        rnd = random.Random(1234)

        def pieces():
            for _ in range(size_mib):
                piece = rnd.randbytes(MIB)
                sent.update(piece)
                yield piece

        started = time.monotonic()
        version = client.put_stream("value", pieces(), total_size=size_mib * MIB, namespace="big-stream")
        put_s = time.monotonic() - started
        started = time.monotonic()
        info = client.get_stream("value", dest=out_path, namespace="big-stream")
        get_s = time.monotonic() - started
        after = peak_rss_bytes(how)
        received = hashlib.sha256()
        with open(out_path, "rb") as f:
            for block in iter(lambda: f.read(MIB), b""):
                received.update(block)
        os.unlink(out_path)
        client.delete("value", namespace="big-stream")
    print(
        json.dumps(
            {
                "version": version,
                "info_version": info.version,
                "total_size": info.total_size,
                "sent_sha256": sent.hexdigest(),
                "received_sha256": received.hexdigest(),
                "measured_by": how,
                "peak_rss_before": before,
                "peak_rss_after": after,
                "put_s": put_s,
                "get_s": get_s,
            }
        )
    )


if __name__ == "__main__":
    main()
