"""Images named on the client commands' command lines, from image files or datasets. numpy and
Pillow only (the dataset loaders of `vaeserve.training.data` need no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vaeserve.errors import InputError


def read_image(spec: str, image_shape: tuple[int, int, int]) -> np.ndarray:
    """One image as uint8 [1, C, H, W] at the model's shape, from `FILE` (PNG, JPEG, ...) or
    `DATASET#INDEX` (image INDEX of an IDX file, .npz or folder that `vaeserve train` reads)."""
    c, h, w = image_shape
    path, _, index = spec.rpartition("#") if "#" in spec else (spec, "", "")
    if index:
        from vaeserve.training.data import load_dataset

        if not index.isdigit():
            raise InputError(f"{spec}: '#' must be followed by an image index")
        data, i = load_dataset(path, channels=c, height=h, width=w), int(index)
        if i >= len(data):
            raise InputError(f"{spec}: index out of range (the dataset has {len(data)} images)")
        return data.images[i : i + 1].copy()
    try:
        with Image.open(Path(path)) as opened:
            image = opened.convert("L" if c == 1 else "RGB")
    except (FileNotFoundError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: cannot read an image ({exc})") from None
    if image.size != (w, h):
        raise InputError(
            f"{path}: {image.width}x{image.height} pixels, but the model takes {w}x{h}"
        )
    array = np.asarray(image, dtype=np.uint8)
    return (array[None] if c == 1 else array.transpose(2, 0, 1))[None].copy()
