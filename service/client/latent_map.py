"""The 2-D latent map on the client side: grid math and tiling, numpy and Pillow only.

The picture of the book's chapter on VAEs: the decoder over an n x n grid of latents, evenly
spaced in probability under the N(0, 1) prior (quantiles 0.05..0.95 through the Gaussian inverse
CDF), so the grid covers where the prior puts its mass. For a latent size above 2 the grid lies
on a chosen 2-D slice: dimensions i and j vary, the others stay at a fixed point (0, the prior's
mean, unless given).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vaeserve.errors import InputError
from vaeserve.imaging import image_grid, latent_grid_points
from vaeserve.service.formats import MESSAGE_OVERHEAD, OutputFormat, image_bytes


def slice_latents(
    grid: int,
    latent_dim: int,
    dims: tuple[int, int] = (0, 1),
    point: Sequence[float] | None = None,
) -> np.ndarray:
    """grid x grid latents [grid * grid, latent_dim] (float32), row r column c at r * grid + c:
    dims[0] grows to the right, dims[1] upward; every other dimension is `point`'s value."""
    if grid < 1:
        raise InputError(f"grid must be at least 1, got {grid}")
    i, j = dims
    if not (0 <= i < latent_dim and 0 <= j < latent_dim) or i == j:
        raise InputError(
            f"dims {list(dims)}: need two different dimensions in 0..{latent_dim - 1} "
            f"(the model's latent size is {latent_dim})"
        )
    base = np.zeros(latent_dim, np.float32) if point is None else np.asarray(point, np.float32)
    if base.shape != (latent_dim,) or not np.isfinite(base).all():
        raise InputError(f"point: need {latent_dim} finite numbers, got {list(base.shape)}")
    z = latent_grid_points(grid, latent_dim, (i, j))
    others = [k for k in range(latent_dim) if k not in (i, j)]
    z[:, others] = base[others]
    return z


def rows_per_request(
    max_images: int, max_message_bytes: int, image_shape: tuple[int, int, int], fmt: OutputFormat
) -> int:
    """Most latents one Decode may carry under the server's limits (images per request, and
    the response under the message-size limit, as the server reckons it)."""
    fits = (max_message_bytes - MESSAGE_OVERHEAD) // image_bytes(image_shape, fmt)
    rows = min(max_images, fits)
    if rows < 1:
        raise InputError(f"one {fmt} image does not fit in max_message_bytes {max_message_bytes}")
    return int(rows)


def batches(count: int, size: int) -> list[slice]:
    """Consecutive slices of at most `size` rows covering 0..count-1."""
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def tile(images: np.ndarray, grid: int) -> np.ndarray:
    """uint8 images [grid * grid, C, H, W] as one uint8 picture [C, grid * H, grid * W], with no
    gaps, so neighbouring cells join into a continuous map."""
    n = len(images)
    if n != grid * grid:
        raise ValueError(f"need {grid * grid} images for a {grid}x{grid} map, got {n}")
    picture = np.asarray(image_grid(images, ncol=grid, pad=0))
    return picture[None] if picture.ndim == 2 else picture.transpose(2, 0, 1)
