"""Latent-space math without a server: interpolation paths, edits, draws around a label, the
concepts.json reader, the latent map's grid and tiling, and the client's image inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from vaeserve.imaging import image_grid
from vaeserve.service import latent
from vaeserve.service.client.inputs import read_image
from vaeserve.service.client.latent_map import batches, rows_per_request, slice_latents, tile
from vaeserve.service.concepts import (
    FORMAT,
    ConceptsError,
    from_json,
    label_statistics,
    sampling_factor,
)
from vaeserve.service.errors import InvalidInput
from vaeserve.service.grpc.converters import interpolation_method, sample_request
from vaeserve.v1 import vae_pb2 as pb

# Two or more dimensions: in one, opposite ends have no great circle (the line, tested below).
vectors = hnp.arrays(
    np.float32, st.integers(2, 8).map(lambda n: (n,)), elements=st.floats(-50, 50, width=32)
)


def _pair(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    a = draw(vectors)
    b = draw(hnp.arrays(np.float32, a.shape, elements=st.floats(-50, 50, width=32)))
    return a, b


pairs = st.composite(_pair)()


@settings(max_examples=300, deadline=None)
@given(pairs, st.integers(2, 40))
def test_slerp_norms_stay_between_the_endpoint_norms(pair, steps):
    a, b = pair
    path = latent.slerp(a, b, steps).astype(np.float64)
    norms = np.linalg.norm(path, axis=1)
    low, high = sorted([np.linalg.norm(a.astype(np.float64)), np.linalg.norm(b.astype(np.float64))])
    assert (norms >= low * (1 - 1e-5) - 1e-6).all() and (norms <= high * (1 + 1e-5) + 1e-6).all()
    np.testing.assert_array_equal(path[0], a)
    np.testing.assert_array_equal(path[-1], b)


@settings(max_examples=100, deadline=None)
@given(pairs, st.integers(2, 20))
def test_lerp_is_the_straight_line_with_exact_ends(pair, steps):
    a, b = pair
    path = latent.lerp(a, b, steps)
    assert path.dtype == np.float32 and path.shape == (steps, len(a))
    np.testing.assert_array_equal(path[[0, -1]], np.stack([a, b]))
    t = np.linspace(0, 1, steps)[:, None]
    np.testing.assert_allclose(path, (1 - t) * a + t * b, atol=1e-4)


def test_textbook_slerp_would_overshoot_ours_does_not():
    a, b = np.array([1.0, 0.0], np.float32), np.array([-3.0, 0.01], np.float32)
    omega = np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    textbook = (np.sin(omega / 2) * (a + b)) / np.sin(omega)  # t = 1/2 on the raw vectors
    assert np.linalg.norm(textbook) > 3.0  # beyond both endpoints' norms
    assert np.linalg.norm(latent.slerp(a, b, 3)[1]) == pytest.approx(2.0, rel=1e-5)


def test_slerp_special_cases():
    a = np.array([3.0, 4.0], np.float32)
    np.testing.assert_allclose(latent.slerp(a, 2 * a, 5), latent.lerp(a, 2 * a, 5))  # parallel
    zero = np.zeros(2, np.float32)
    np.testing.assert_allclose(latent.slerp(zero, a, 3), latent.lerp(zero, a, 3))
    half = latent.slerp(a, -a, 3)[1]  # opposite: a quarter turn, norm kept
    assert abs(half @ a) < 1e-5 and np.linalg.norm(half) == pytest.approx(5.0)
    one = latent.slerp(np.array([2.0], np.float32), np.array([-1.0], np.float32), 3)
    np.testing.assert_allclose(one[:, 0], [2.0, 0.5, -1.0])  # one dimension: the line
    u, v = np.array([1.0, 0, 0], np.float32), np.array([0, 1.0, 0], np.float32)
    quarter = latent.slerp(u, v, 3)[1]
    np.testing.assert_allclose(quarter, [np.sqrt(0.5), np.sqrt(0.5), 0], atol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        latent.interpolate(u, v, 1)
    with pytest.raises(ValueError, match="unknown interpolation method"):
        latent.interpolate(u, v, 3, "cubic")  # type: ignore[arg-type]


def test_edit_rows_and_alpha_zero_exact():
    z = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    v = np.array([1.0, -2.0, 0.5, 0.0])
    moved = latent.edit(z, v, np.array([0.0, 1.5]))
    assert moved.shape == (6, 4) and moved.dtype == np.float32
    np.testing.assert_array_equal(moved[0::2], z)
    np.testing.assert_allclose(moved[1::2], z + 1.5 * v, atol=1e-6)


def test_around_draws_from_the_fitted_gaussian():
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    factor = sampling_factor(cov)
    np.testing.assert_allclose(factor @ factor.T, cov, atol=1e-8)
    eps = np.random.default_rng(1).standard_normal((20000, 2))
    z = latent.around(np.array([1.0, -1.0]), factor, eps, 0.5)
    np.testing.assert_allclose(z.mean(axis=0), [1.0, -1.0], atol=0.02)
    np.testing.assert_allclose(np.cov(z.T.astype(np.float64)), 0.25 * cov, atol=0.02)
    singular = sampling_factor(np.array([[1.0, 1.0], [1.0, 1.0]]))  # not positive definite
    np.testing.assert_allclose(singular @ singular.T, [[1.0, 1.0], [1.0, 1.0]], atol=1e-6)


# --- concepts.json ------------------------------------------------------------------------------


def _document(latent_dim: int = 2) -> dict[str, object]:
    gen = np.random.default_rng(0)
    mu = gen.standard_normal((30, latent_dim))
    labels, overall = label_statistics(mu, np.zeros_like(mu) - 2, np.arange(30) % 3)
    return {
        "format": FORMAT,
        "model": {"encoder_sha256": "abc"},
        "overall": overall,
        "labels": labels,
        "vectors": {"wide": {"vector": [1.0, 0.0], "description": "test"}},
    }


def test_concept_names_resolve():
    concepts = from_json(_document(), 2)
    means = {k: s.mean for k, s in concepts.labels.items()}
    np.testing.assert_allclose(concepts.vector("0-2").vector, means["0"] - means["2"])
    np.testing.assert_allclose(
        concepts.vector("label:1").vector, means["1"] - concepts.overall_mean
    )
    assert concepts.vector("wide").kind == "images"
    assert [v.name for v in concepts.listed()] == [
        "label:0", "label:1", "label:2", "0-1", "0-2", "1-0", "1-2", "2-0", "2-1", "wide",
    ]  # fmt: skip
    assert concepts.label("label:2").count == 10
    with pytest.raises(InvalidInput, match="unknown concept 'label:7'; this model has label:0"):
        concepts.vector("label:7")
    with pytest.raises(InvalidInput, match="needs a label concept 'label:K', got 'wide'"):
        concepts.label("wide")
    with pytest.raises(InvalidInput, match=r"'x{48}'\.\.\. \(500 characters\)"):
        concepts.vector("x" * 500)  # long names are cut short in the message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="other"), "not a concepts file"),
        (lambda d: d["overall"].update(mean=[0.0]), "overall.mean: need 2 finite numbers"),
        (lambda d: d["labels"]["1"].update(covariance=[[1, 2], [0, 1]]), "symmetric 2x2"),
        (lambda d: d["labels"].update({"a-b": d["labels"]["1"]}), "reserved"),
        (lambda d: d["vectors"].update({"bad name": {"vector": [0, 0]}}), "vector name"),
        (lambda d: d["labels"]["0"].pop("mean"), "missing or malformed field"),
    ],
)
def test_malformed_concepts_json_is_refused(change, message):
    document = json.loads(json.dumps(_document()))
    change(document)
    with pytest.raises(ConceptsError, match=message):
        from_json(document, 2)


# --- converters ---------------------------------------------------------------------------------


def test_converters_pass_concept_and_method():
    assert sample_request(pb.SampleRequest(n=1, concept="label:3")).concept == "label:3"
    assert interpolation_method(0) == "linear" and interpolation_method(2) == "spherical"
    with pytest.raises(InvalidInput, match="unknown InterpolationMethod value 5"):
        interpolation_method(5)


# --- the latent map -----------------------------------------------------------------------------


def test_slice_latents_grid_and_fixed_point():
    z = slice_latents(4, 3, (2, 0), [9.0, 0.25, 9.0])
    assert z.shape == (16, 3) and (z[:, 1] == 0.25).all()
    np.testing.assert_allclose(z[:4, 2], [-1.6449, -0.3853, 0.3853, 1.6449], atol=1e-4)
    assert (z[:4, 0] == z[0, 0]).all() and z[0, 0] == pytest.approx(1.6449, abs=1e-4)
    assert z[12, 0] == pytest.approx(-1.6449, abs=1e-4)  # bottom row: lowest quantile
    with pytest.raises(ValueError, match="two different dimensions"):
        slice_latents(4, 2, (1, 1))
    with pytest.raises(ValueError, match="point: need 3"):
        slice_latents(4, 3, (0, 1), [0.0])


def test_requests_respect_both_limits():
    assert rows_per_request(100, 1_000_000, (1, 28, 28), "uint8") == 100
    assert rows_per_request(1000, 4096 + 10 * 784, (1, 28, 28), "uint8") == 10
    with pytest.raises(ValueError, match="does not fit"):
        rows_per_request(10, 4096, (1, 28, 28), "uint8")
    assert batches(25, 10) == [slice(0, 10), slice(10, 20), slice(20, 25)]


def test_tile_joins_cells_without_gaps():
    cells = np.arange(4 * 3 * 2 * 2, dtype=np.uint8).reshape(4, 3, 2, 2)
    picture = tile(cells, 2)
    assert picture.shape == (3, 4, 4)
    np.testing.assert_array_equal(picture[:, 2:, :2], cells[2])
    np.testing.assert_array_equal(
        np.asarray(image_grid(cells, 2, pad=0)).transpose(2, 0, 1), picture
    )
    with pytest.raises(ValueError, match="need 9 images"):
        tile(cells, 3)


# --- image inputs -------------------------------------------------------------------------------


def test_read_image_from_files_and_datasets(tmp_path):
    pixels = np.arange(144, dtype=np.uint8).reshape(12, 12)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    np.testing.assert_array_equal(
        read_image(str(tmp_path / "a.png"), (1, 12, 12)), pixels[None, None]
    )
    rgb = read_image(str(tmp_path / "a.png"), (3, 12, 12))
    assert rgb.shape == (1, 3, 12, 12) and (rgb[0, 2] == pixels).all()
    stack = np.stack([pixels[None], 255 - pixels[None]])
    np.savez(tmp_path / "d.npz", images=stack)
    np.testing.assert_array_equal(read_image(f"{tmp_path / 'd.npz'}#1", (1, 12, 12)), stack[1:])
    with pytest.raises(ValueError, match="index out of range"):
        read_image(f"{tmp_path / 'd.npz'}#2", (1, 12, 12))
    with pytest.raises(ValueError, match="image index"):
        read_image(f"{tmp_path / 'd.npz'}#x", (1, 12, 12))
    with pytest.raises(ValueError, match="12x12 pixels, but the model takes 28x28"):
        read_image(str(tmp_path / "a.png"), (1, 28, 28))
    with pytest.raises(ValueError, match="cannot read an image"):
        read_image(str(tmp_path / "missing.png"), (1, 12, 12))
