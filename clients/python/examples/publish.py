#!/usr/bin/env python3
"""Publishes one version of the toy model's parameters to OptiCache.

    python examples/publish.py --model demo --version 3

Writes every array, then the manifest, then moves the model's "latest"
pointer (see Client.put_params); prints one JSON line with the version and
the parameters' digest."""

from __future__ import annotations

import argparse
import json
import sys

from toy_model import digest, make_params

from opticache import Client


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coordinators", default="127.0.0.1:50051,127.0.0.1:50052")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--version", type=int, required=True)
    parser.add_argument("--inputs", type=int, default=64, help="rows of layer1.weight")
    parser.add_argument("--token", default=None, help="auth token, sent as 'authorization: Bearer ...'")
    parser.add_argument("--ca-cert", default=None, help="CA certificate (PEM) for TLS; plaintext without")
    args = parser.parse_args(argv)

    params = make_params(args.version, inputs=args.inputs)
    with Client(args.coordinators, token=args.token, tls=args.ca_cert) as client:
        client.put_params(args.model, args.version, params)
    print(json.dumps({"event": "published", "model": args.model, "version": args.version, "digest": digest(params)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
