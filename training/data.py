"""Dataset loaders: MNIST IDX files, .npz archives and folders of images.

Every loader returns uint8 images in N x C x H x W order (the layout the model and the ONNX graphs
use) with integer labels when the source has them. Only numpy and Pillow are needed, so tools that
never import torch (the service's concept builder, ONNX evaluation) can share these loaders.
Anything wrong with a file becomes a `DatasetError` that names the file, never a numpy traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vaeserve.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
# IDX type codes (http://yann.lecun.com/exdb/mnist/): byte 3 of the magic number.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DatasetError(UserError, ValueError):
    """A dataset file or folder that cannot be used; the message names it and says why."""


@dataclass
class ImageData:
    """Images as uint8 N x C x H x W, with labels (int64, length N) when the source has them."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    kind: str
    label_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.images.shape
        return (int(c), int(h), int(w))

    def subset(self, index: np.ndarray) -> ImageData:
        labels = None if self.labels is None else self.labels[index]
        return ImageData(self.images[index], labels, self.source, self.kind, self.label_names)

    def describe(self) -> dict[str, object]:
        """What a checkpoint or model.json records about the data it came from."""
        c, h, w = self.image_shape
        return {
            "source": self.source,
            "kind": self.kind,
            "images": len(self),
            "shape": [c, h, w],
            "labelled": self.labels is not None,
            "md5": dataset_md5(Path(self.source)),
        }


def load_dataset(
    path: str | Path,
    *,
    channels: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> ImageData:
    """Load a dataset, choosing the loader by content, and check it fits the requested shape.

    Folders of images are converted to the requested channel count and resized; IDX and .npz data
    must already have the requested size (a mismatch is an error, not a silent resize).
    """
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p}: no such file or folder")
    if p.is_dir():
        idx_files = sorted(f for f in p.iterdir() if f.is_file() and "idx3-ubyte" in f.name)
        if idx_files:
            data = _concat([load_idx_images(f) for f in idx_files], str(p))
        else:
            data = load_image_folder(p, channels=channels, height=height, width=width)
    else:
        head = _read_head(p)
        if head.startswith(_ZIP_MAGIC):
            data = load_npz(p)
        elif head.startswith(_GZIP_MAGIC) or _looks_like_idx(head):
            data = load_idx_images(p)
        else:
            raise DatasetError(
                f"{p}: not a recognised dataset (expected an IDX file, gzipped or not, an .npz "
                "archive, or a folder of images)"
            )
    _check_fits(data, channels, height, width)
    return data


def _read_head(p: Path) -> bytes:
    with p.open("rb") as f:
        head = f.read(8)
    if not head:
        raise DatasetError(f"{p}: file is empty")
    return head


def _looks_like_idx(head: bytes) -> bool:
    return len(head) >= 4 and head[0] == 0 and head[1] == 0 and head[2] in _IDX_DTYPES


def _check_fits(
    data: ImageData, channels: int | None, height: int | None, width: int | None
) -> None:
    c, h, w = data.image_shape
    want = (channels or c, height or h, width or w)
    if (c, h, w) != want:
        raise DatasetError(
            f"{data.source}: images are {c}x{h}x{w} (CxHxW) but the model expects "
            f"{want[0]}x{want[1]}x{want[2]}; pick matching --channels/--image-size or other data"
        )


def _concat(parts: list[ImageData], source: str) -> ImageData:
    if len(parts) == 1:
        return parts[0]
    shapes = {d.image_shape for d in parts}
    if len(shapes) != 1:
        raise DatasetError(f"{source}: files hold images of different shapes {sorted(shapes)}")
    labels = None
    if all(d.labels is not None for d in parts):
        labels = np.concatenate([d.labels for d in parts])  # type: ignore[misc]
    return ImageData(np.concatenate([d.images for d in parts]), labels, source, parts[0].kind)


# ---------------------------------------------------------------------------- IDX


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (gzipped or raw) into an array, checking its header against its size."""
    raw = path.read_bytes()
    if not raw:
        raise DatasetError(f"{path}: file is empty")
    if raw.startswith(_GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt or truncated gzip data ({exc})") from None
    if len(raw) < 4 or not _looks_like_idx(raw[:4]):
        raise DatasetError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'none'})")
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise DatasetError(
            f"{path}: IDX data {what}: header says shape {dims} ({expected} bytes), found {found}"
        )
    # Copy: frombuffer views are read-only, and torch warns on (and must not write to) those.
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).copy()


def _labels_path_for(images_path: Path) -> Path | None:
    name = images_path.name
    if "images-idx3" not in name:
        return None
    base = name.replace("images-idx3", "labels-idx1")
    stem = base[:-3] if base.endswith(".gz") else base
    for candidate in (images_path.with_name(stem + ".gz"), images_path.with_name(stem)):
        if candidate.is_file():
            return candidate
    return None


def load_idx_images(path: Path) -> ImageData:
    """An IDX image file, with labels from its `*-labels-idx1-ubyte[.gz]` sibling if present."""
    arr = read_idx(path)
    if arr.ndim == 3:
        arr = arr[:, None, :, :]
    elif arr.ndim == 4:
        arr = _to_nchw(arr, path)
    else:
        raise DatasetError(
            f"{path}: IDX images must have 3 dims (N, H, W), found shape {arr.shape}"
        )
    images = _to_uint8(arr, path)
    labels = None
    label_path = _labels_path_for(path)
    if label_path is not None:
        lab = read_idx(label_path)
        if lab.ndim != 1 or lab.shape[0] != images.shape[0]:
            raise DatasetError(
                f"{label_path}: expected {images.shape[0]} labels to match {path.name}, "
                f"found shape {lab.shape}"
            )
        labels = lab.astype(np.int64)
    if images.shape[0] == 0:
        raise DatasetError(f"{path}: contains no images")
    return ImageData(images, labels, str(path), "idx")


# ---------------------------------------------------------------------------- npz

_X_ORDER = ("x_train", "x_val", "x_valid", "x_test")


def load_npz(path: Path) -> ImageData:
    """A NumPy archive: keras-style `x_*`/`y_*` pairs (all splits, concatenated) or one array."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: corrupt or unreadable .npz archive ({exc})") from None
    if not arrays:
        raise DatasetError(f"{path}: archive holds no arrays")
    x_keys = sorted(
        (k for k in arrays if k.startswith("x_")),
        key=lambda k: (_X_ORDER.index(k) if k in _X_ORDER else len(_X_ORDER), k),
    )
    if x_keys:
        pairs = [(arrays[k], arrays.get("y_" + k[2:])) for k in x_keys]
    elif "images" in arrays:
        pairs = [(arrays["images"], arrays.get("labels"))]
    elif len(arrays) == 1:
        pairs = [(next(iter(arrays.values())), None)]
    else:
        raise DatasetError(
            f"{path}: cannot tell which array holds the images among {sorted(arrays)}; "
            "use keras-style x_train/x_test (with y_*) keys, 'images' (with 'labels'), or one array"
        )
    images = [_to_uint8(_to_nchw(np.asarray(x), path), path) for x, _ in pairs]
    shapes = {im.shape[1:] for im in images}
    if len(shapes) != 1:
        raise DatasetError(f"{path}: arrays hold images of different shapes {sorted(shapes)}")
    labels = None
    if all(y is not None for _, y in pairs):
        labels_list = []
        for (_, y), im in zip(pairs, images, strict=True):
            y = np.asarray(y).reshape(-1)
            if y.shape[0] != im.shape[0] or not np.issubdtype(y.dtype, np.integer):
                raise DatasetError(
                    f"{path}: labels must be {im.shape[0]} integers to match the images, "
                    f"found shape {y.shape} of {y.dtype}"
                )
            labels_list.append(y.astype(np.int64))
        labels = np.concatenate(labels_list)
    out = np.concatenate(images)
    if out.shape[0] == 0:
        raise DatasetError(f"{path}: contains no images")
    return ImageData(out, labels, str(path), "npz")


def _to_nchw(arr: np.ndarray, path: Path) -> np.ndarray:
    """Accept N x H x W, N x H x W x C or N x C x H x W (C of 1 or 3) and return N x C x H x W."""
    if arr.ndim == 3:
        return arr[:, None, :, :]
    if arr.ndim == 4:
        if arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
            return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
        if arr.shape[1] in (1, 3):
            return arr
        if arr.shape[-1] in (1, 3):
            return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))
    raise DatasetError(
        f"{path}: images must be N x H x W, N x H x W x C or N x C x H x W with C of 1 or 3, "
        f"found shape {arr.shape}"
    )


def _to_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    """uint8 as is; other integers and bools in range; floats in [0, 1] scaled to 0..255."""
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DatasetError(f"{path}: integer pixel values must lie in 0..255")
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and not np.isfinite(arr).all():
            raise DatasetError(f"{path}: images contain NaN or infinite values")
        if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
            raise DatasetError(f"{path}: float pixel values must lie in [0, 1]")
        return np.rint(arr * 255.0).astype(np.uint8)
    raise DatasetError(f"{path}: unsupported pixel dtype {arr.dtype}")


# ---------------------------------------------------------------------------- image folder


def load_image_folder(
    root: Path,
    *,
    channels: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> ImageData:
    """Every image under `root`, converted to `channels` and resized to height x width.

    When images sit in one level of subfolders (root/<label>/x.png), the sorted subfolder names
    become the labels. Unset settings are taken from the first image.
    """
    from PIL import Image, UnidentifiedImageError

    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(
            f"{root}: folder holds no images ({', '.join(IMAGE_SUFFIXES)}) and no IDX files"
        )
    parents = {f.parent for f in files}
    labelled = all(p.parent == root for p in parents)
    label_names = sorted(p.name for p in parents) if labelled else []

    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                if channels is None:
                    channels = 1 if im.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
                if height is None or width is None:
                    width, height = im.size
                im = im.convert("L" if channels == 1 else "RGB")
                if im.size != (width, height):
                    im = im.resize((width, height), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DatasetError(f"{f}: cannot read image ({exc})") from None
        images.append(arr[None, :, :] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    labels = None
    if labelled:
        index = {name: i for i, name in enumerate(label_names)}
        labels = np.array([index[f.parent.name] for f in files], dtype=np.int64)
    return ImageData(np.stack(images), labels, str(root), "folder", label_names)


# ---------------------------------------------------------------------------- helpers


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split; numpy-only so ONNX evaluation can rebuild the same split."""
    if n < 1:
        raise ValueError("cannot split an empty dataset")
    order = np.random.default_rng(seed).permutation(n)
    n_val = round(n * val_fraction)
    if val_fraction > 0:
        n_val = min(max(n_val, 1), n - 1) if n > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def dataset_md5(path: Path) -> str | None:
    """md5 of a dataset file (for folders: of every file's name and bytes, in sorted order)."""
    h = hashlib.md5(usedforsecurity=False)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file())
    else:
        return None
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
