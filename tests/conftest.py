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


def save_untrained_checkpoint(
    path: Path,
    *,
    height: int = 12,
    width: int = 12,
    channels: int = 1,
    latent_dim: int = 3,
    seed: int = 0,
) -> Path:
    """A checkpoint of a randomly initialised VAE, as `vaeserve train` would write it."""
    import torch

    from vaeserve.training.checkpoint import save_checkpoint
    from vaeserve.training.config import ModelConfig, TrainConfig
    from vaeserve.training.model import VAE

    cfg = ModelConfig(height=height, width=width, channels=channels, latent_dim=latent_dim)
    torch.manual_seed(seed)
    model = VAE(cfg)
    save_checkpoint(
        path,
        {
            "model_config": cfg.to_dict(),
            "train_config": TrainConfig(data=str(path.parent / "no-such-data")).to_dict(),
            "model": model.state_dict(),
            "optimizer": {},
            "rng": torch.Generator().manual_seed(seed).get_state(),
            "epoch": 0,
            "history": [],
            "dataset": {"source": "none (untrained test model)"},
            "versions": {},
        },
    )
    return path


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with one small untrained model, `tiny` version 1 (12x12x1, latent 3),
    exported with the real exporter. Session-scoped: tests must not modify it (copy it first)."""
    from vaeserve.export.onnx_export import export_model

    root = tmp_path_factory.mktemp("repo")
    ckpt = save_untrained_checkpoint(root.parent / f"{root.name}-tiny.pt")
    export_model(ckpt, root, "tiny", 1, batch_sizes=(1, 3, 64))
    return root
