"""The toy model the examples publish and serve: one linear layer.

Shared by publish.py and serve.py (run them from any directory: Python puts
this file's directory on the path of a script next to it)."""

from __future__ import annotations

import hashlib
from typing import Dict

import numpy as np

INPUTS = 64
OUTPUTS = 8


def make_params(version: int, inputs: int = INPUTS, outputs: int = OUTPUTS) -> Dict[str, np.ndarray]:
    """Deterministic parameters for ``version``: the same version always
    gives the same arrays, different versions different ones."""
    rng = np.random.default_rng(version)
    return {
        "layer1.weight": rng.standard_normal((inputs, outputs)).astype(np.float32),
        "layer1.bias": rng.standard_normal(outputs).astype(np.float32),
        "meta.step": np.array(version * 1000, dtype=np.int64),
    }


def digest(params: Dict[str, np.ndarray]) -> str:
    """A checksum of a parameter set: names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name in sorted(params):
        array = np.ascontiguousarray(params[name])
        h.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def predict(params: Dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The model: x @ weight + bias."""
    return x @ params["layer1.weight"] + params["layer1.bias"]
