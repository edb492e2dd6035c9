"""Image helpers shared by training, export and the service: numpy and Pillow only, no torch."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] to uint8, rounding to the nearest level (clipped, never wrapped)."""
    return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images (0..255) as float32 in [0, 1], the graphs' input range; float32 as is."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    return images


def to_pil(image: np.ndarray) -> Image.Image:
    """One uint8 image, C x H x W with C of 1 or 3, as a Pillow image."""
    if image.shape[0] == 1:
        return Image.fromarray(image[0], mode="L")
    return Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), mode="RGB")


def image_grid(images: np.ndarray, ncol: int | None = None, pad: int = 2) -> Image.Image:
    """Tile uint8 N x C x H x W images into one picture (a contact sheet), row by row."""
    n, c, h, w = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    sheet = np.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        sheet[:, y : y + h, x : x + w] = images[i]
    return to_pil(sheet)


def save_grid(images: np.ndarray, path: Path, ncol: int | None = None, scale: int = 1) -> Path:
    """Write `image_grid(images)` as a PNG, optionally enlarged (nearest neighbour) for viewing."""
    grid = image_grid(images, ncol)
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def latent_grid_points(n: int, dim: int = 2, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """n x n latent points on a 2-D slice, evenly spaced in probability under the N(0, 1) prior.

    As in the book: linspace(0.05, 0.95) mapped through the Gaussian inverse CDF, so the grid
    covers where the prior puts its mass. Row r, column c is at index r * n + c; y grows downward
    from the highest quantile so the picture reads like a plot. Other coordinates are 0.
    """
    q = [NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)]
    z = np.zeros((n * n, dim), dtype=np.float32)
    for r in range(n):
        for c in range(n):
            z[r * n + c, axes[0]] = q[c]
            z[r * n + c, axes[1]] = q[n - 1 - r]
    return z
