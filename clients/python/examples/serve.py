#!/usr/bin/env python3
"""A small model server: loads the toy model's parameters from OptiCache and
switches to a newer version as soon as one is published.

    python examples/serve.py --model demo              # serve until Ctrl-C
    python examples/serve.py --model demo --once       # load the latest, answer once, exit
    python examples/serve.py --model demo --iterations 100 --interval 0.5

Each iteration asks for the model's latest version (one small read of the
"latest" pointer); when it differs from the one in memory, the whole
parameter set is read (get_params, which never returns a half-written set)
and swapped in. Then the iteration "serves" a request: a prediction on a
fixed input. Events are printed as JSON lines:

    {"event": "loaded", "version": 3, "digest": "...", "prediction": [...]}
    {"event": "done", "iterations": 100, "version": 3, "served": 100}
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from toy_model import digest, predict

from opticache import Client, OptiCacheError


def emit(event: dict) -> None:
    print(json.dumps(event), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coordinators", default="127.0.0.1:50051,127.0.0.1:50052")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls of the latest version")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--once", action="store_true", help="load the latest version, serve one request, exit")
    group.add_argument("--iterations", type=int, default=0, help="stop after this many iterations (0: never)")
    parser.add_argument("--stop-at-version", type=int, default=None, help="exit once this version (or newer) is loaded")
    parser.add_argument("--token", default=None, help="auth token, sent as 'authorization: Bearer ...'")
    parser.add_argument("--ca-cert", default=None, help="CA certificate (PEM) for TLS; plaintext without")
    args = parser.parse_args(argv)

    iterations = 1 if args.once else args.iterations
    params = None
    version = None
    served = 0
    done = 0
    with Client(args.coordinators, token=args.token, tls=args.ca_cert) as client:
        while not iterations or done < iterations:
            try:
                latest = client.latest_params_version(args.model)
                if latest is not None and latest != version:
                    params = client.get_params(args.model, latest)
                    version = latest
                    x = np.ones(params["layer1.weight"].shape[0], dtype=np.float32)
                    emit(
                        {
                            "event": "loaded",
                            "model": args.model,
                            "version": version,
                            "arrays": len(params),
                            "bytes": int(sum(a.nbytes for a in params.values())),
                            "digest": digest(params),
                            "prediction": [round(float(v), 4) for v in predict(params, x)],
                        }
                    )
            except OptiCacheError as e:
                # Keep serving the version in memory; try again next time.
                emit({"event": "error", "error": str(e)})
            if params is not None:
                predict(params, np.ones(params["layer1.weight"].shape[0], dtype=np.float32))
                served += 1
            done += 1
            if args.once or (
                args.stop_at_version is not None and version is not None and version >= args.stop_at_version
            ):
                break
            time.sleep(args.interval)
    emit({"event": "done", "iterations": done, "version": version, "served": served})
    if params is None:
        print(f"serve.py: model {args.model!r} has no published parameters", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
