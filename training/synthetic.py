"""A small labelled dataset of drawn shapes, for tests and demos on machines without real data.

Nothing is downloaded: images are drawn with numpy from a seed, so every machine gets the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHAPES = ("horizontal bar", "vertical bar", "square", "ring", "diagonal")


def make_shapes(
    n: int, height: int = 28, width: int = 28, channels: int = 1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images N x C x H x W, int64 labels): one shape per image at a random place and size,
    in a random colour for 3 channels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    images = np.zeros((n, channels, height, width), dtype=np.uint8)
    labels = rng.integers(0, len(SHAPES), size=n)
    for i, label in enumerate(labels):
        cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
        r = rng.uniform(0.15, 0.3) * min(height, width)
        t = max(1.0, 0.08 * min(height, width))
        if label == 0:
            mask = (abs(yy - cy) < t) & (abs(xx - cx) < r)
        elif label == 1:
            mask = (abs(xx - cx) < t) & (abs(yy - cy) < r)
        elif label == 2:
            mask = (abs(yy - cy) < r * 0.7) & (abs(xx - cx) < r * 0.7)
        elif label == 3:
            d = np.hypot(yy - cy, xx - cx)
            mask = abs(d - r) < t
        else:
            mask = (abs((yy - cy) - (xx - cx)) < t * 1.4) & (abs(yy - cy) < r)
        colour = rng.integers(128, 256, size=channels) if channels > 1 else [255]
        for c in range(channels):
            images[i, c][mask] = colour[c]
    return images, labels.astype(np.int64)


def write_shapes_npz(path: Path, n: int = 2000, seed: int = 0, **kwargs: int) -> Path:
    """Write `make_shapes` as a keras-style .npz (x_train, y_train)."""
    images, labels = make_shapes(n, seed=seed, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x_train=images, y_train=labels)
    return path
