"""Loaders on files the tests write: IDX (gz and raw), npz, image folders, and broken files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from PIL import Image

from tests.conftest import write_idx
from vaeserve.training.data import DatasetError, load_dataset, split_indices
from vaeserve.training.synthetic import make_shapes


@pytest.fixture
def images() -> np.ndarray:
    return make_shapes(20, height=10, width=12, seed=3)[0][:, 0]  # N x H x W


@pytest.mark.parametrize("gz", [True, False])
def test_idx_with_labels(tmp_path, images, gz):
    suffix = ".gz" if gz else ""
    labels = np.arange(20) % 10
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, gz=gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, gz=gz)
    data = load_dataset(tmp_path / f"t10k-images-idx3-ubyte{suffix}")
    assert data.images.dtype == np.uint8
    assert data.images.shape == (20, 1, 10, 12)
    np.testing.assert_array_equal(data.images[:, 0], images)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.kind == "idx"
    # the folder holding the IDX files loads the same data
    np.testing.assert_array_equal(load_dataset(tmp_path).images, data.images)


def test_idx_without_labels(tmp_path, images):
    data = load_dataset(write_idx(tmp_path / "my-images-idx3-ubyte", images))
    assert data.labels is None and len(data) == 20


def test_npz_keras_style_concatenates_splits(tmp_path, images):
    np.savez(
        tmp_path / "d.npz",
        x_train=images[:15],
        y_train=np.arange(15),
        x_test=images[15:],
        y_test=np.arange(5),
    )
    data = load_dataset(tmp_path / "d.npz")
    assert data.images.shape == (20, 1, 10, 12)
    np.testing.assert_array_equal(data.labels, np.r_[np.arange(15), np.arange(5)])


def test_npz_single_array_nhwc_float(tmp_path):
    rgb = np.random.default_rng(0).random((6, 8, 9, 3)).astype(np.float32)
    np.savez(tmp_path / "one.npz", rgb)  # stored as arr_0
    data = load_dataset(tmp_path / "one.npz")
    assert data.images.shape == (6, 3, 8, 9) and data.labels is None
    np.testing.assert_array_equal(data.images, np.rint(rgb.transpose(0, 3, 1, 2) * 255))


def test_npz_nchw_kept(tmp_path):
    arr = np.zeros((4, 3, 16, 16), dtype=np.uint8)
    np.savez(tmp_path / "nchw.npz", images=arr, labels=np.arange(4))
    assert load_dataset(tmp_path / "nchw.npz").images.shape == (4, 3, 16, 16)


def test_image_folder_labels_convert_and_resize(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(3):
            rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(tmp_path / label / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
        tmp_path / "dog" / "x.jpg"
    )
    data = load_dataset(tmp_path, channels=1, height=14, width=10)
    assert data.images.shape == (7, 1, 14, 10)
    assert data.label_names == ["cat", "dog"]
    np.testing.assert_array_equal(data.labels, [0, 0, 0, 1, 1, 1, 1])
    # unset settings come from the first image
    assert load_dataset(tmp_path).image_shape == (3, 20, 30)


def test_shape_mismatch_names_file_and_expectation(tmp_path, images):
    path = write_idx(tmp_path / "a-images-idx3-ubyte", images)
    with pytest.raises(DatasetError, match=r"a-images-idx3-ubyte.*1x10x12.*expects 1x28x28"):
        load_dataset(path, channels=1, height=28, width=28)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"hello world, not data", "not a recognised dataset"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt or truncated gzip"),
        (b"PK\x03\x04broken zip", "corrupt or unreadable .npz"),
    ],
)
def test_broken_files(tmp_path, content, message):
    path = tmp_path / "broken.bin"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(path)
    assert "broken.bin" in str(info.value)


def test_truncated_idx(tmp_path, images):
    raw = write_idx(tmp_path / "x-images-idx3-ubyte", images).read_bytes()
    (tmp_path / "x-images-idx3-ubyte").write_bytes(raw[:-7])
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset(tmp_path / "x-images-idx3-ubyte")
    # a gzip stream cut short
    (tmp_path / "y-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(DatasetError, match=r"y-images-idx3-ubyte\.gz.*gzip"):
        load_dataset(tmp_path / "y-images-idx3-ubyte.gz")
    # a header that claims more dimensions than the file holds
    (tmp_path / "z-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DatasetError, match="truncated IDX header"):
        load_dataset(tmp_path / "z-images-idx3-ubyte")


def test_label_count_mismatch(tmp_path, images):
    write_idx(tmp_path / "t-images-idx3-ubyte", images)
    write_idx(tmp_path / "t-labels-idx1-ubyte", np.arange(5))
    with pytest.raises(DatasetError, match="expected 20 labels"):
        load_dataset(tmp_path / "t-images-idx3-ubyte")


def test_npz_problems(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 4, 4)), b=np.zeros((2, 4, 4)))
    with pytest.raises(DatasetError, match="cannot tell which array"):
        load_dataset(tmp_path / "two.npz")
    np.savez(tmp_path / "range.npz", np.full((2, 4, 4), 3.0))
    with pytest.raises(DatasetError, match=r"\[0, 1\]"):
        load_dataset(tmp_path / "range.npz")
    np.savez(tmp_path / "nan.npz", np.full((2, 4, 4), np.nan))
    with pytest.raises(DatasetError, match="NaN"):
        load_dataset(tmp_path / "nan.npz")
    np.savez(tmp_path / "empty.npz", np.zeros((0, 4, 4), dtype=np.uint8))
    with pytest.raises(DatasetError, match="no images"):
        load_dataset(tmp_path / "empty.npz")
    np.savez(tmp_path / "dims.npz", np.zeros((2, 4, 4, 5, 5), dtype=np.uint8))
    with pytest.raises(DatasetError, match="found shape"):
        load_dataset(tmp_path / "dims.npz")


def test_folder_problems(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DatasetError, match=r"x\.png: cannot read image"):
        load_dataset(tmp_path / "bad")


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_indices(10_000, 0.1, seed=0)
    assert (len(train), len(val)) == (9000, 1000)
    assert not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(10_000))
    again = split_indices(10_000, 0.1, seed=0)
    np.testing.assert_array_equal(val, again[1])
    assert not np.array_equal(val, split_indices(10_000, 0.1, seed=1)[1])
    assert len(split_indices(5, 0.0, seed=0)[1]) == 0
