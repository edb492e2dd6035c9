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


def make_scenes(n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB images N x 3 x size x size, int64 object counts): a stand-in for natural
    images where none can be downloaded. Each is a two-colour gradient at a random angle with
    one to three soft-edged discs or boxes in random colours, and a little pixel noise, so no
    pixel sits at exactly 0 or 1 and a Gaussian likelihood is the fitting one."""
    rng = np.random.default_rng(seed)
    grid = (np.mgrid[0:size, 0:size].astype(np.float64) + 0.5) / size  # (2, H, W) in [0, 1]
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    counts = rng.integers(1, 4, size=n)
    edge = 1.5 / size  # about a pixel and a half of soft edge
    for i, count in enumerate(counts):
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * grid[1] + np.sin(angle) * grid[0]
        t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
        a, b = rng.uniform(0.1, 0.9, size=(2, 3, 1, 1))
        image = a * (1 - t) + b * t
        for _ in range(count):
            cy, cx = rng.uniform(0.2, 0.8, size=2)
            r = rng.uniform(0.08, 0.22)
            if rng.random() < 0.5:
                d = np.hypot(grid[0] - cy, grid[1] - cx) - r
            else:
                d = np.maximum(abs(grid[0] - cy), abs(grid[1] - cx)) - r * 0.85
            alpha = np.clip(0.5 - d / edge, 0.0, 1.0)
            colour = rng.uniform(0.0, 1.0, size=(3, 1, 1))
            image = image * (1 - alpha) + colour * alpha
        image += rng.normal(0.0, 0.01, size=image.shape)
        images[i] = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    return images, counts.astype(np.int64)


def write_scenes_npz(path: Path, n: int = 2000, size: int = 64, seed: int = 0) -> Path:
    """Write `make_scenes` as a keras-style .npz (x_train, y_train: the object counts)."""
    images, counts = make_scenes(n, size=size, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x_train=images, y_train=counts)
    return path


def write_shapes_npz(path: Path, n: int = 2000, seed: int = 0, **kwargs: int) -> Path:
    """Write `make_shapes` as a keras-style .npz (x_train, y_train)."""
    images, labels = make_shapes(n, seed=seed, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x_train=images, y_train=labels)
    return path
