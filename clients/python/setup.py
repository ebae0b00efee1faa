"""Build hook of the ``opticache`` package: generates the gRPC stubs.

The stubs of ``opticache.v1`` are compiled from the repository's
``proto/opticache/v1/opticache.proto`` with grpcio-tools at build time and put
next to the package's own modules as ``opticache/v1/opticache_pb2*.py``. They
are never written by hand and never committed.

Where the .proto is looked for, first match wins:

1. ``$OPTICACHE_PROTO_DIR`` (a directory holding ``opticache/v1/opticache.proto``);
2. ``proto/`` next to this file: an sdist made from the repository carries a
   copy there (see ``sdist`` below);
3. ``../../proto``: the repository itself, when pip builds in place, which it
   does for a local directory from pip 21.3 on.

The runtime dependencies get lower bounds from the tools that generated the
stubs: generated code refuses a grpcio older than the grpcio-tools that made
it, and a protobuf runtime older than its gencode.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py
from setuptools.command.sdist import sdist as _sdist

HERE = Path(__file__).resolve().parent
PROTO = Path("opticache", "v1", "opticache.proto")
GENERATED = ("opticache_pb2.py", "opticache_pb2.pyi", "opticache_pb2_grpc.py")


def proto_root() -> Path:
    """The directory that holds ``opticache/v1/opticache.proto``."""
    candidates = []
    env = os.environ.get("OPTICACHE_PROTO_DIR")
    if env:
        candidates.append(Path(env))
    candidates += [HERE / "proto", HERE.parent.parent / "proto"]
    for root in candidates:
        if (root / PROTO).is_file():
            return root.resolve()
    searched = "\n".join(f"  - {root / PROTO}" for root in candidates)
    raise SystemExit(
        "error: cannot build opticache: the API definition opticache/v1/opticache.proto was not found.\n"
        f"Searched:\n{searched}\n"
        "The package is built from the OptiCache repository (clients/python next to proto/). "
        "pip older than 21.3 copies clients/python elsewhere before building: upgrade pip "
        "(pip install -U 'pip>=21.3'), or pass --use-feature=in-tree-build (pip 21.1 and 21.2), "
        "or set OPTICACHE_PROTO_DIR to the repository's proto/ directory."
    )


_generated: Path | None = None


def generate() -> Path:
    """Runs grpc_tools.protoc once per build; the directory holding the output."""
    global _generated
    if _generated is not None:
        return _generated
    try:
        from grpc_tools import protoc
    except ImportError:
        raise SystemExit(
            "error: cannot build opticache: grpcio-tools is missing. pip installs it on its own from "
            "pyproject.toml's build-system; when building without isolation, `pip install grpcio-tools` first."
        ) from None
    root = proto_root()
    out = Path(tempfile.mkdtemp(prefix="opticache-stubs-"))
    atexit.register(shutil.rmtree, out, True)
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={root}",
        f"--proto_path={well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--pyi_out={out}",
        str(root / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"error: grpc_tools.protoc failed on {root / PROTO} (its messages are above)")
    for name in GENERATED:
        if not (out / "opticache" / "v1" / name).is_file():
            raise SystemExit(f"error: grpc_tools.protoc did not write opticache/v1/{name}")
    _generated = out
    return out


def runtime_requirements() -> list[str]:
    """grpcio and protobuf, no older than what the generated stubs accept."""
    from grpc_tools import grpc_version

    stubs = generate() / "opticache" / "v1"
    requirements = [f"grpcio>={grpc_version.VERSION}"]
    gencode = re.search(
        r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),",
        (stubs / "opticache_pb2.py").read_text(encoding="utf-8"),
    )
    if gencode:
        major, minor, patch = (int(part) for part in gencode.groups())
        # Same major as the gencode: the runtime warns about, and later
        # refuses, gencode of another major version.
        requirements.append(f"protobuf>={major}.{minor}.{patch},<{major + 1}")
    else:
        # Older grpcio-tools emit no runtime check.
        requirements.append("protobuf>=3.20")
    return requirements


class build_py(_build_py):
    """Copies the generated stubs into the build (or, for an editable
    install, into src/, where .gitignore keeps them out of git)."""

    def run(self) -> None:
        super().run()
        for source, target in self._stub_files():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)

    def _stub_files(self) -> list[tuple[Path, Path]]:
        base = HERE / "src" if getattr(self, "editable_mode", False) else Path(self.build_lib)
        stubs = generate() / "opticache" / "v1"
        return [(stubs / name, base / "opticache" / "v1" / name) for name in GENERATED]

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs += [str(target) for _, target in self._stub_files()]
        return outputs


class sdist(_sdist):
    """Puts a copy of the .proto into the sdist, so that it builds anywhere."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        target = Path(base_dir, "proto", PROTO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(proto_root() / PROTO, target)


if sys.version_info < (3, 9):  # pragma: no cover - pip checks requires-python first
    raise SystemExit("error: opticache needs Python 3.9 or newer")

# Build outputs go to a fresh temporary directory, not to build/ and
# src/*.egg-info in the source tree: pip builds a local directory in place,
# and a reused build/lib would carry modules deleted from src/ into the wheel.
_build_base = tempfile.mkdtemp(prefix="opticache-build-")
atexit.register(shutil.rmtree, _build_base, True)

setup(
    install_requires=runtime_requirements(),
    cmdclass={"build_py": build_py, "sdist": sdist},
    options={"build": {"build_base": _build_base}, "egg_info": {"egg_base": _build_base}},
)
