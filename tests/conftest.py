"""Shared fixtures: small datasets written by the tests themselves (no ../shared needed)."""

from __future__ import annotations

import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write an array as an IDX file (uint8), the format of the original MNIST files."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def _cuda_visible() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_visible():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shapes_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vaeserve.training.synthetic import write_shapes_npz

    return write_shapes_npz(
        tmp_path_factory.mktemp("data") / "shapes.npz", n=320, seed=1, height=12, width=12
    )
