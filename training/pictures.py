"""Pictures of a trained model: samples, reconstructions, the latent grid and the latent scatter."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from vaeserve.imaging import latent_grid_points, save_grid, to_float, to_uint8
from vaeserve.training.data import ImageData
from vaeserve.training.model import VAE

log = logging.getLogger(__name__)


@torch.no_grad()
def write_pictures(model: VAE, data: ImageData, out_dir: Path, seed: int = 0) -> list[Path]:
    """samples.png, reconstructions.png, and for a 2-D latent latent_grid.png and (with labels)
    latent_scatter.png. Returns the paths written."""
    model.eval()
    cfg = model.config
    scale = max(1, 64 // max(cfg.height, cfg.width))  # small images are hard to see at 1:1
    gen = torch.Generator().manual_seed(seed)
    written = []

    z = torch.randn((100, cfg.latent_dim), generator=gen)
    written.append(save_grid(_decode(model, z), out_dir / "samples.png", ncol=10, scale=scale))

    originals = data.images[:50]
    x = torch.from_numpy(to_float(originals))
    recon = to_uint8(model.decode(model.encode(x)[0]).numpy())
    rows = []  # alternate rows: 10 originals, then their reconstructions
    for start in range(0, len(originals), 10):
        rows += [originals[start : start + 10], recon[start : start + 10]]
    written.append(
        save_grid(np.concatenate(rows), out_dir / "reconstructions.png", ncol=10, scale=scale)
    )

    if cfg.latent_dim == 2:
        grid = torch.from_numpy(latent_grid_points(20, 2))
        written.append(
            save_grid(
                _decode(model, grid), out_dir / "latent_grid.png", ncol=20, scale=max(1, scale // 2)
            )
        )
        if data.labels is not None:
            means = _encode_means(model, data.images)
            written.append(_scatter(means, data.labels, out_dir / "latent_scatter.png"))
    for path in written:
        log.info("wrote %s", path)
    return written


def _decode(model: VAE, z: torch.Tensor) -> np.ndarray:
    return to_uint8(model.decode(z).numpy())


def _encode_means(model: VAE, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(to_float(images[start : start + batch]))
        out.append(model.encode(x)[0].numpy())
    return np.concatenate(out)


def _scatter(means: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    points = ax.scatter(means[:, 0], means[:, 1], c=labels, cmap="tab10", s=6, alpha=0.8)
    fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel("z[0] (posterior mean)")
    ax.set_ylabel("z[1] (posterior mean)")
    ax.set_title(f"Validation images in latent space (n={len(means)})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
