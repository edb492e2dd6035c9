"""Interpolate, ListConcepts, Edit and Sample's `concept` over real gRPC: through the generated
stubs and through VaeClient, on real servers and ONNX Runtime, with concepts.json files the tests
build themselves (`vaeserve.export.concepts`) from labelled images they generate."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from vaeserve.export.concepts import build_concepts
from vaeserve.export.onnx_eval import cpu_session
from vaeserve.imaging import to_uint8
from vaeserve.service.client import VaeClient
from vaeserve.service.client.latent_map import slice_latents
from vaeserve.service.concepts import sampling_factor
from vaeserve.service.grpc.tensors import to_array, to_tensor
from vaeserve.service.repository import bundled_repository
from vaeserve.service.rng import normal_rows
from vaeserve.training.synthetic import make_shapes
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

from .conftest import ServerThread, running_server

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
LABELS = ("0", "1", "2", "3", "4")  # make_shapes: horizontal bar, vertical bar, square, ring, diag


def f32(array: np.ndarray) -> pb.Tensor:
    return to_tensor(np.asarray(array, np.float32))


# --- fixtures: a tiny model with concepts, and the bundled model with generated labels -----------


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, Path]:
    """Labelled 12x12 shapes for the concepts, and two unlabelled sets for a user vector."""
    root = tmp_path_factory.mktemp("shapes")
    images, labels = make_shapes(300, height=12, width=12, seed=5)
    np.savez_compressed(root / "labelled.npz", x_train=images, y_train=labels)
    np.savez_compressed(root / "horizontal.npz", images=images[labels == 0])
    np.savez_compressed(root / "vertical.npz", images=images[labels == 1])
    return {name: root / f"{name}.npz" for name in ("labelled", "horizontal", "vertical")}


@pytest.fixture(scope="module")
def concept_repository(tiny_repository, shapes, tmp_path_factory) -> Path:
    """A copy of the tiny model with a concepts.json: label statistics and one user vector."""
    root = tmp_path_factory.mktemp("concepts-repo")
    shutil.copytree(tiny_repository / "tiny", root / "tiny")
    build_concepts(
        root / "tiny" / "1",
        data=shapes["labelled"],
        vectors={"bars": (shapes["horizontal"], shapes["vertical"])},
    )
    return root


@pytest.fixture(scope="module")
def lserver(concept_repository) -> Iterator[ServerThread]:
    with running_server(concept_repository, providers="cpu") as srv:
        yield srv


@pytest.fixture(scope="module")
def lstub(lserver) -> Iterator[vae_pb2_grpc.VaeServiceStub]:
    with grpc.insecure_channel(lserver.target) as channel:
        yield vae_pb2_grpc.VaeServiceStub(channel)


@pytest.fixture(scope="module")
def client(lserver) -> Iterator[VaeClient]:
    with VaeClient(lserver.target, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def encodings(concept_repository, shapes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z_mean, z_log_var, labels) of the labelled shapes, by encoder.onnx run directly."""
    session = cpu_session(concept_repository / "tiny" / "1" / "encoder.onnx")
    data = np.load(shapes["labelled"])
    mu, log_var = session.run(None, {"image": data["x_train"].astype(np.float32) / 255})
    return mu, log_var, data["y_train"]


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 12, 12), dtype=np.float32)


def decode(stub: vae_pb2_grpc.VaeServiceStub, z: np.ndarray) -> np.ndarray:
    return to_array(stub.Decode(pb.DecodeRequest(latents=f32(z)), timeout=10).images, "images")


def encode(stub: vae_pb2_grpc.VaeServiceStub, x: np.ndarray) -> np.ndarray:
    return to_array(stub.Encode(pb.EncodeRequest(images=to_tensor(x)), timeout=10).z_mean, "z")


# --- Interpolate --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method", [pb.INTERPOLATION_METHOD_LINEAR, pb.INTERPOLATION_METHOD_SPHERICAL]
)
def test_interpolation_endpoints_are_the_decoded_endpoints(lstub, method):
    a, b = np.array([[1.5, -0.5, 0.2]], np.float32), np.array([[-0.3, 2.0, -1.1]], np.float32)
    request = pb.InterpolateRequest(start_latent=f32(a), end_latent=f32(b), steps=7, method=method)
    reply = lstub.Interpolate(request, timeout=10)
    latents, out = to_array(reply.latents, "latents"), to_array(reply.images, "images")
    assert latents.shape == (7, 3) and out.shape == (7, 1, 12, 12)
    np.testing.assert_array_equal(latents[0], a[0])
    np.testing.assert_array_equal(latents[-1], b[0])
    ends = decode(lstub, np.concatenate([a, b]))
    np.testing.assert_allclose(out[[0, -1]], ends, atol=1e-6)
    np.testing.assert_allclose(out, decode(lstub, latents), atol=1e-6)  # every point decoded
    assert (reply.model, reply.version) == ("tiny", 1)


def test_interpolation_between_images_starts_and_ends_at_their_encodings(lstub):
    x = images(2, seed=3)
    x8 = to_uint8(x[1:])  # one float32 and one uint8 endpoint, encoded together
    request = pb.InterpolateRequest(
        start_image=to_tensor(x[:1]),
        end_image=to_tensor(x8),
        steps=5,
        method=pb.INTERPOLATION_METHOD_SPHERICAL,
        format=pb.IMAGE_FORMAT_UINT8,
    )
    reply = lstub.Interpolate(request, timeout=10)
    latents = to_array(reply.latents, "latents")
    z = encode(lstub, np.concatenate([x[:1], x8.astype(np.float32) / np.float32(255)]))
    np.testing.assert_allclose(latents[[0, -1]], z, atol=1e-6)
    got = to_array(reply.images, "images")
    assert got.dtype == np.uint8 and got.shape == (5, 1, 12, 12)
    assert np.abs(got[[0, -1]].astype(int) - to_uint8(decode(lstub, z)).astype(int)).max() <= 1


def test_linear_path_is_evenly_spaced_on_the_segment(lstub):
    a, b = np.array([[-2.0, 0.0, 1.0]]), np.array([[2.0, 4.0, -1.0]])
    reply = lstub.Interpolate(
        pb.InterpolateRequest(start_latent=f32(a), end_latent=f32(b), steps=5), timeout=10
    )
    t = np.linspace(0, 1, 5)[:, None]
    np.testing.assert_allclose(to_array(reply.latents, "z"), (1 - t) * a + t * b, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_slerp_keeps_norms_between_the_endpoints_norms(lstub, seed):
    gen = np.random.default_rng(seed)
    a = gen.standard_normal((1, 3)) * gen.uniform(0.2, 3)
    b = gen.standard_normal((1, 3)) * gen.uniform(0.2, 3)
    if seed == 0:
        b = -a * 3.0  # opposite directions, different norms: the textbook slerp overshoots
    request = pb.InterpolateRequest(
        start_latent=f32(a),
        end_latent=f32(b),
        steps=11,
        method=pb.INTERPOLATION_METHOD_SPHERICAL,
    )
    path = to_array(lstub.Interpolate(request, timeout=10).latents, "z").astype(np.float64)
    norms = np.linalg.norm(path, axis=1)
    low, high = sorted([np.linalg.norm(a), np.linalg.norm(b)])
    assert (norms >= low * (1 - 1e-6)).all() and (norms <= high * (1 + 1e-6)).all(), norms
    # and it is not the straight line: a chord between non-parallel ends dips below both norms
    linear = to_array(
        lstub.Interpolate(
            pb.InterpolateRequest(start_latent=f32(a), end_latent=f32(b), steps=11), timeout=10
        ).latents,
        "z",
    )
    assert np.linalg.norm(linear[5]) < norms[5] - 1e-3
    # the angle turns at constant speed
    unit = path / norms[:, None]
    steps = np.arccos(np.clip(np.sum(unit[1:] * unit[:-1], axis=1), -1, 1))
    np.testing.assert_allclose(steps, steps.mean(), atol=1e-4)


# --- ListConcepts -------------------------------------------------------------------------------


def test_list_concepts_are_the_statistics_of_the_labelled_data(
    lstub, encodings, concept_repository
):
    mu, log_var, labels = encodings
    reply = lstub.ListConcepts(pb.ListConceptsRequest(), timeout=10)
    assert [c.label for c in reply.labels] == list(LABELS)
    assert sum(c.count for c in reply.labels) == len(mu) == 300
    overall = mu.astype(np.float64).mean(axis=0)
    for entry in reply.labels:
        rows = labels == int(entry.label)
        m = mu[rows].astype(np.float64)
        assert entry.count == rows.sum()
        np.testing.assert_allclose(to_array(entry.mean, "mean"), m.mean(axis=0), atol=1e-6)
        expected = np.cov(m.T) + np.diag(np.exp(log_var[rows].astype(np.float64)).mean(axis=0))
        np.testing.assert_allclose(
            to_array(entry.covariance, "cov"), expected, rtol=1e-4, atol=1e-7
        )
    vectors = {v.name: v for v in reply.vectors}
    pairs = [f"{a}-{b}" for a in LABELS for b in LABELS if a != b]
    assert list(vectors) == [f"label:{k}" for k in LABELS] + pairs + ["bars"]
    means = {c.label: to_array(c.mean, "mean").astype(np.float64) for c in reply.labels}
    label3 = vectors["label:3"]
    assert label3.kind == "label" and "minus the mean of all 300 images" in label3.description
    np.testing.assert_allclose(to_array(label3.vector, "v"), means["3"] - overall, atol=1e-6)
    np.testing.assert_allclose(label3.norm, np.linalg.norm(means["3"] - overall), rtol=1e-5)
    np.testing.assert_allclose(
        to_array(vectors["2-4"].vector, "v"), means["2"] - means["4"], atol=1e-6
    )
    bars = to_array(vectors["bars"].vector, "v")  # horizontal minus vertical bars = "0-1"
    assert vectors["bars"].kind == "images"
    np.testing.assert_allclose(bars, to_array(vectors["0-1"].vector, "v"), atol=1e-6)
    info = lstub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert reply.encoder_sha256 == info.encoder_sha256
    assert reply.dataset.endswith("labelled.npz") and (reply.model, reply.version) == ("tiny", 1)


def test_model_without_concepts_lists_nothing(stub):
    reply = stub.ListConcepts(pb.ListConceptsRequest(), timeout=10)
    assert not reply.vectors and not reply.labels and reply.model == "tiny"


def test_concepts_of_another_encoder_are_ignored(concept_repository, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(concept_repository, root)
    path = root / "tiny" / "1" / "concepts.json"
    document = json.loads(path.read_text())
    document["model"]["encoder_sha256"] = "0" * 64
    path.write_text(json.dumps(document))
    with running_server(root, providers="cpu") as srv, VaeClient(srv.target) as c:
        assert c.list_concepts().vectors == {}
        with pytest.raises(grpc.RpcError) as err:
            c.sample(2, concept="label:1")
        assert err.value.code() == INVALID and "has no concepts" in err.value.details()


# --- Edit ---------------------------------------------------------------------------------------


def test_edit_with_alpha_zero_is_the_plain_reconstruction(lstub):
    x = images(3, seed=8)
    reply = lstub.Edit(
        pb.EditRequest(images=to_tensor(x), concept="label:2", alphas=[0.0]), timeout=10
    )
    z = encode(lstub, x)
    np.testing.assert_array_equal(to_array(reply.latents, "z"), z)
    np.testing.assert_allclose(to_array(reply.images, "i"), decode(lstub, z), atol=1e-6)


def test_edit_rows_are_each_image_moved_by_each_alpha(lstub):
    x8 = to_uint8(images(2, seed=9))
    alphas = [-1.0, 0.0, 0.5, 2.0]
    reply = lstub.Edit(
        pb.EditRequest(images=to_tensor(x8), concept="3-0", alphas=alphas), timeout=10
    )
    vectors = {v.name: v for v in lstub.ListConcepts(pb.ListConceptsRequest(), timeout=10).vectors}
    v = to_array(vectors["3-0"].vector, "v")
    z = encode(lstub, x8)
    expected = np.stack([z[i] + a * v for i in range(2) for a in alphas])
    latents = to_array(reply.latents, "z")
    np.testing.assert_allclose(latents, expected, atol=1e-5)
    np.testing.assert_allclose(to_array(reply.images, "i"), decode(lstub, latents), atol=1e-6)
    png = lstub.Edit(
        pb.EditRequest(images=to_tensor(x8), concept="bars", alphas=alphas, format=3), timeout=10
    )
    assert len(png.encoded) == 8 and not png.HasField("images")
    assert Image.open(io.BytesIO(png.encoded[0])).size == (12, 12)


@pytest.fixture(scope="module")
def mnist_concepts(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """The bundled MNIST model (trained) with a concepts.json built from labelled images the
    test generates: the decoder's pictures of four regions of latent space, labelled by region.
    Returns the repository and held-out images (with labels) not used for the concepts."""
    root = tmp_path_factory.mktemp("mnist-repo")
    source = bundled_repository() / "mnist" / "1"
    (root / "mnist" / "1").mkdir(parents=True)
    for name in ("encoder.onnx", "decoder.onnx", "model.json"):
        shutil.copy(source / name, root / "mnist" / "1" / name)
    decoder = cpu_session(source / "decoder.onnx")
    centres = np.array([[-1.5, 0.0], [1.5, 0.0], [0.0, 1.5], [0.0, -1.5]], np.float32)

    def region_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        gen = np.random.default_rng(seed)
        labels = gen.integers(0, len(centres), n)
        z = centres[labels] + np.float32(0.3) * gen.standard_normal((n, 2), dtype=np.float32)
        return to_uint8(decoder.run(None, {"z": z})[0]), labels

    x, y = region_images(400, seed=1)
    np.savez_compressed(root / "regions.npz", x_train=x, y_train=y)
    build_concepts(root / "mnist" / "1", data=root / "regions.npz")
    held_out, held_labels = region_images(80, seed=2)
    return root, held_out, held_labels


def test_edited_images_re_encode_nearer_the_label_mean(mnist_concepts):
    """On the trained bundled model, for held-out images of other labels: z + v_K is nearer
    label K's mean than z, and so is the edited image when encoded again (the decoder really
    draws it nearer K); alpha -1 moves it away."""
    root, held_out, held_labels = mnist_concepts
    limits = {"max_images_per_request": 1000, "max_message_bytes": 4_000_000}
    with running_server(root, providers="cpu", **limits) as srv, VaeClient(srv.target) as c:
        found = c.list_concepts()
        assert sorted(found.labels) == ["0", "1", "2", "3"]
        for k, stats in found.labels.items():
            others = held_out[held_labels != int(k)]
            edited = c.edit(others, f"label:{k}", [1.0, -1.0], format="uint8")
            assert edited.images is not None
            before = np.linalg.norm(c.encode(others).z_mean - stats.mean, axis=1)
            moved = np.linalg.norm(edited.latents[0::2] - stats.mean, axis=1)
            assert (moved < before).mean() >= 0.85, (k, (moved < before).mean())
            toward = np.linalg.norm(c.encode(edited.images[0::2]).z_mean - stats.mean, axis=1)
            away = np.linalg.norm(c.encode(edited.images[1::2]).z_mean - stats.mean, axis=1)
            assert toward.mean() < 0.8 * before.mean(), (k, before.mean(), toward.mean())
            assert (toward < before).mean() >= 0.85, (k, (toward < before).mean())
            assert away.mean() > before.mean(), (k, before.mean(), away.mean())


# --- Sample around a label ----------------------------------------------------------------------


def test_sample_near_a_label_draws_from_its_fitted_gaussian(lstub):
    labels = {c.label: c for c in lstub.ListConcepts(pb.ListConceptsRequest(), timeout=10).labels}
    mean = to_array(labels["3"].mean, "mean").astype(np.float64)
    cov = to_array(labels["3"].covariance, "cov").astype(np.float64)
    request = pb.SampleRequest(n=200, seed=4, temperature=0.5, concept="label:3", format=2)
    reply = lstub.Sample(request, timeout=10)
    latents = to_array(reply.latents, "z")
    eps = normal_rows(4, 0, 200, 3).astype(np.float64)
    expected = mean + 0.5 * eps @ sampling_factor(cov).T
    np.testing.assert_allclose(latents, expected, rtol=1e-4, atol=1e-5)
    assert np.abs(latents.mean(axis=0) - mean).max() < 4 * 0.5 * np.sqrt(cov.diagonal().max() / 200)
    zero = lstub.Sample(pb.SampleRequest(n=2, seed=1, temperature=0, concept="label:3"), timeout=10)
    np.testing.assert_allclose(to_array(zero.latents, "z"), np.stack([mean, mean]), atol=1e-6)
    chunks = list(
        lstub.SampleStream(pb.SampleRequest(chunk_size=64, **_fields(request)), timeout=10)
    )
    streamed = np.concatenate([to_array(c.latents, "z") for c in chunks])
    np.testing.assert_array_equal(streamed, latents)
    assert b"".join(c.images.data for c in chunks) == reply.images.data


def _fields(request: pb.SampleRequest) -> dict[str, object]:
    return {f.name: v for f, v in request.ListFields()}


# --- bad arguments ------------------------------------------------------------------------------

Z = f32(np.zeros((1, 3)))
IMG = to_tensor(np.zeros((1, 1, 12, 12), np.float32))
X3 = to_tensor(np.zeros((3, 1, 12, 12), np.uint8))

CASES = [
    ("no start", "Interpolate", pb.InterpolateRequest(end_latent=Z, steps=3), INVALID,
     "start: missing (set start_latent or start_image)"),
    ("no end", "Interpolate", pb.InterpolateRequest(start_image=IMG, steps=3), INVALID,
     "end: missing"),
    ("steps 0", "Interpolate", pb.InterpolateRequest(start_latent=Z, end_latent=Z), INVALID,
     "steps: got 0, need at least 2"),
    ("steps 1", "Interpolate", pb.InterpolateRequest(start_latent=Z, end_latent=Z, steps=1),
     INVALID, "need at least 2"),
    ("steps over limit", "Interpolate",
     pb.InterpolateRequest(start_latent=Z, end_latent=Z, steps=101), EXHAUSTED,
     "steps: 101 images is over this server's max_images_per_request 100"),
    ("latent of wrong size", "Interpolate",
     pb.InterpolateRequest(start_latent=f32(np.zeros((1, 2))), end_latent=Z, steps=3), INVALID,
     "start_latent: shape [1, 2], but tiny v1 needs one latent [1, 3]"),
    ("two latents at one end", "Interpolate",
     pb.InterpolateRequest(start_latent=Z, end_latent=f32(np.zeros((2, 3))), steps=3), INVALID,
     "end_latent: shape [2, 3]"),
    ("NaN latent", "Interpolate",
     pb.InterpolateRequest(start_latent=f32([[0, np.nan, 0]]), end_latent=Z, steps=3), INVALID,
     "start_latent: values must be finite"),
    ("arc out of float32 range", "Interpolate",
     pb.InterpolateRequest(start_latent=f32([[3e38, 3e38, 0]]), end_latent=f32([[3e38, -3e38, 0]]),
                           steps=3, method=2), INVALID, "leaves the float32 range"),
    ("uint8 latent", "Interpolate",
     pb.InterpolateRequest(start_latent=to_tensor(np.zeros((1, 3), np.uint8)), end_latent=Z,
                           steps=3), INVALID, "start_latent: dtype uint8, need float32"),
    ("image of wrong size", "Interpolate",
     pb.InterpolateRequest(start_latent=Z, end_image=to_tensor(np.zeros((1, 1, 28, 28),
                           np.uint8)), steps=3), INVALID, "end_image: shape [1, 1, 28, 28]"),
    ("image out of [0, 1]", "Interpolate",
     pb.InterpolateRequest(start_image=to_tensor(np.full((1, 1, 12, 12), 2.0, np.float32)),
                           end_latent=Z, steps=3), INVALID, "must be in [0, 1]"),
    ("malformed tensor", "Interpolate",
     pb.InterpolateRequest(start_latent=pb.Tensor(shape=[1, 3], dtype=1, data=b"\0"),
                           end_latent=Z, steps=3), INVALID, "start_latent: shape [1, 3]"),
    ("unknown method", "Interpolate",
     pb.InterpolateRequest(start_latent=Z, end_latent=Z, steps=3, method=9), INVALID,
     "unknown InterpolationMethod value 9"),
    ("unknown format", "Interpolate",
     pb.InterpolateRequest(start_latent=Z, end_latent=Z, steps=3, format=9), INVALID,
     "unknown ImageFormat value 9"),
    ("unknown model", "Interpolate",
     pb.InterpolateRequest(model="nope", start_latent=Z, end_latent=Z, steps=3), NOT_FOUND,
     "unknown model 'nope'"),
    ("no images", "Edit", pb.EditRequest(concept="label:1", alphas=[1]), INVALID,
     "images: missing"),
    ("no concept", "Edit", pb.EditRequest(images=X3, alphas=[1]), INVALID, "concept: missing"),
    ("unknown concept", "Edit", pb.EditRequest(images=X3, concept="label:9", alphas=[1]),
     INVALID, "concept: unknown concept 'label:9'; this model has label:0, label:1"),
    ("unknown pair", "Edit", pb.EditRequest(images=X3, concept="1-7", alphas=[1]), INVALID,
     "unknown concept '1-7'"),
    ("no alphas", "Edit", pb.EditRequest(images=X3, concept="label:1"), INVALID,
     "alphas: need at least one"),
    ("NaN alpha", "Edit",
     pb.EditRequest(images=X3, concept="label:1", alphas=[0, float("nan")]), INVALID,
     "alphas[1] is nan"),
    ("infinite alpha", "Edit",
     pb.EditRequest(images=X3, concept="label:1", alphas=[float("-inf")]), INVALID,
     "alphas[0] is -inf"),
    ("alpha out of range", "Edit",
     pb.EditRequest(images=X3, concept="label:1", alphas=[1, 100.5]), INVALID,
     "each must be finite and in [-100, 100]; alphas[1] is 100.5"),
    ("images x alphas over limit", "Edit",
     pb.EditRequest(images=to_tensor(np.zeros((30, 1, 12, 12), np.uint8)), concept="label:1",
                    alphas=[0, 1, 2, 3]), EXHAUSTED,
     "images x alphas (30 x 4): 120 images is over this server's max_images_per_request 100"),
    ("too many alphas", "Edit",
     pb.EditRequest(images=X3, concept="label:1", alphas=[0.0] * 101), EXHAUSTED,
     "alphas: 101 images is over"),
    ("wrong image shape", "Edit",
     pb.EditRequest(images=to_tensor(np.zeros((2, 12, 12), np.uint8)), concept="label:1",
                    alphas=[1]), INVALID, "images: shape [2, 12, 12], but tiny v1 takes"),
    ("zero images", "Edit",
     pb.EditRequest(images=to_tensor(np.zeros((0, 1, 12, 12), np.uint8)), concept="label:1",
                    alphas=[1]), INVALID, "need at least 1"),
    ("edit, unknown version", "Edit",
     pb.EditRequest(version=4, images=X3, concept="label:1", alphas=[1]), NOT_FOUND,
     "has no version 4"),
    ("sample near a pair", "Sample", pb.SampleRequest(n=2, concept="1-0"), INVALID,
     "concept: sampling needs a label concept 'label:K', got '1-0'"),
    ("sample near a user vector", "Sample", pb.SampleRequest(n=2, concept="bars"), INVALID,
     "needs a label concept"),
    ("sample near an unknown label", "Sample", pb.SampleRequest(n=2, concept="label:x"),
     INVALID, "labels: ['0', '1', '2', '3', '4']"),
    ("stream near a pair", "SampleStream", pb.SampleRequest(n=2, concept="1-0"), INVALID,
     "needs a label concept"),
    ("concepts of unknown model", "ListConcepts", pb.ListConceptsRequest(model="x"), NOT_FOUND,
     "unknown model 'x'"),
    ("concepts of unknown version", "ListConcepts", pb.ListConceptsRequest(version=2),
     NOT_FOUND, "has no version 2"),
]  # fmt: skip

NO_CONCEPTS = [
    ("edit", "Edit", pb.EditRequest(images=X3, concept="label:1", alphas=[1])),
    ("sample", "Sample", pb.SampleRequest(n=2, concept="label:1")),
    ("stream", "SampleStream", pb.SampleRequest(n=2, concept="label:1")),
]


def call(stub: vae_pb2_grpc.VaeServiceStub, method: str, request: object) -> object:
    if method == "SampleStream":
        return list(stub.SampleStream(request, timeout=10))
    return getattr(stub, method)(request, timeout=10)


@pytest.mark.parametrize(
    ("method", "request_", "code", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_arguments(lstub, method, request_, code, message):
    with pytest.raises(grpc.RpcError) as err:
        call(lstub, method, request_)
    assert err.value.code() == code, err.value.details()
    assert message in err.value.details()


@pytest.mark.parametrize(
    ("method", "request_"), [c[1:] for c in NO_CONCEPTS], ids=[c[0] for c in NO_CONCEPTS]
)
def test_model_without_concepts_says_so(stub, method, request_):
    with pytest.raises(grpc.RpcError) as err:
        call(stub, method, request_)
    assert err.value.code() == INVALID
    assert "tiny v1 has no concepts (no usable concepts.json" in err.value.details()


# --- VaeClient ----------------------------------------------------------------------------------


def test_client_interpolates_latents_and_images(client, lstub):
    a, b = np.array([0.5, -1.0, 2.0], np.float32), images(1, seed=4)[0]  # [L] and [C, H, W]
    path = client.interpolate(a, b, 6, method="spherical")
    assert path.images is not None and path.images.shape == (6, 1, 12, 12) and len(path) == 6
    np.testing.assert_array_equal(path.latents[0], a)
    np.testing.assert_allclose(path.latents[-1], encode(lstub, b[None])[0], atol=1e-6)
    png = client.interpolate(a[None], b[None], 3, format="png")
    assert png.images is None and png.png is not None and len(png.png) == 3
    with pytest.raises(ValueError, match="a latent"):
        client.interpolate(np.zeros((1, 1, 1, 1, 3)), a, 3)


def test_client_lists_edits_and_samples_near_labels(client):
    found = client.list_concepts()
    assert set(found.labels) == set(LABELS) and "bars" in found.vectors
    assert found.vectors["label:1"].vector.shape == (3,)
    assert found.labels["1"].covariance.shape == (3, 3)
    x = images(2, seed=6)
    edited = client.edit(x, "label:1", [0, 1], format="uint8")
    assert edited.images is not None and edited.images.dtype == np.uint8
    np.testing.assert_allclose(
        edited.latents[1] - edited.latents[0], found.vectors["label:1"].vector, atol=1e-5
    )
    near = client.sample(3, seed=2, temperature=0, concept="label:1")
    np.testing.assert_allclose(near.latents, np.stack([found.labels["1"].mean] * 3), atol=1e-6)
    streamed = list(client.sample_stream(3, seed=2, temperature=0, concept="label:1"))
    np.testing.assert_array_equal(np.concatenate([s.latents for s in streamed]), near.latents)
    with pytest.raises(grpc.RpcError) as err:
        client.edit(x, "nothing", [1])
    assert err.value.code() == INVALID


def test_client_latent_map_tiles_the_decoded_grid_in_requests_under_the_limits(client, lstub):
    grid = 11  # 121 latents: over max_images_per_request (100), so two Decode requests
    picture = client.latent_map(dims=(2, 0), grid=grid, point=[0.0, 0.7, 0.0])
    assert picture.shape == (1, grid * 12, grid * 12) and picture.dtype == np.uint8
    z = slice_latents(grid, 3, (2, 0), [0.0, 0.7, 0.0])
    assert (z[:, 1] == np.float32(0.7)).all()
    assert z[0, 2] < z[1, 2] and z[0, 0] > z[grid, 0]  # dim 2 rightward, dim 0 upward
    cells = to_uint8(np.concatenate([decode(lstub, z[:60]), decode(lstub, z[60:])]))
    for r, c in [(0, 0), (0, 10), (5, 3), (10, 10)]:
        cell = picture[:, r * 12 : (r + 1) * 12, c * 12 : (c + 1) * 12]
        np.testing.assert_array_equal(cell, cells[r * grid + c])
    with pytest.raises(ValueError, match="two different dimensions"):
        client.latent_map(dims=(0, 3))


# --- the command line ---------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`vaeserve ARGS` in a subprocess with torch unimportable (the client needs none)."""
    code = (
        "import sys; sys.modules['torch'] = None; "
        "from vaeserve.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def test_cli_builds_concepts_without_torch(concept_repository, shapes, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(concept_repository, root)
    (root / "tiny" / "1" / "concepts.json").unlink()
    where = ["--repository", str(root), "--name", "tiny", "--version", "1"]
    done = run_cli("concepts", "--data", str(shapes["labelled"]), *where)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["labels"] == {k: int(v) for k, v in zip(LABELS, np.bincount(
        np.load(shapes["labelled"])["y_train"]), strict=True)}  # fmt: skip
    done = run_cli(
        "concepts", "--from-images", "bars", str(shapes["horizontal"]), str(shapes["vertical"]),
        *where,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads((root / "tiny" / "1" / "concepts.json").read_text())
    assert set(document["labels"]) == set(LABELS) and set(document["vectors"]) == {"bars"}
    assert document["command"].startswith("vaeserve concepts --from-images bars")
    unlabelled = run_cli("concepts", "--data", str(shapes["vertical"]), *where)
    assert unlabelled.returncode == 2 and "Traceback" not in unlabelled.stderr
    assert "no labels (concepts need a labelled dataset)" in unlabelled.stderr


def test_cli_client_commands_write_pngs(lserver, shapes, tmp_path):
    target = ["--target", lserver.target]
    first = Image.fromarray(np.load(shapes["labelled"])["x_train"][0, 0])
    first.save(tmp_path / "first.png")
    data = f"{shapes['labelled']}#7"
    commands = {
        "interp.png": ["interpolate", "--from-image", str(tmp_path / "first.png"), "--to-latent",
                       "-1", "0.5", "2", "--steps", "8", "--method", "spherical"],
        "edit.png": ["edit", "--image", data, f"{shapes['labelled']}#8", "--concept", "label:3",
                     "--alphas", "-1", "0", "1"],
        "map.png": ["latent-map", "--grid", "11", "--dims", "1", "2", "--scale", "2"],
        "sample.png": ["sample", "--all-labels", "--n", "4"],
    }  # fmt: skip
    sizes = {
        "interp.png": (2 + 8 * 14, 2 + 14),
        "edit.png": (2 + 3 * 14, 2 + 2 * 14),
        "map.png": (11 * 12 * 2, 11 * 12 * 2),
        "sample.png": (2 + 4 * 14, 2 + 5 * 14),
    }
    for name, command in commands.items():
        done = run_cli(*command, *target, "--out", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["out"] == str(tmp_path / name)
        assert Image.open(tmp_path / name).size == sizes[name], name
    refused = run_cli("edit", "--image", data, "--concept", "label:9", *target,
                      "--out", str(tmp_path / "x.png"))  # fmt: skip
    assert (
        refused.returncode == 1 and "INVALID_ARGUMENT: concept: unknown concept" in refused.stderr
    )
    assert not (tmp_path / "x.png").exists()


def test_cli_generate_near_a_label_keeps_to_its_concept(lserver, tmp_path):
    out = tmp_path / "near-2"
    common = ["generate", "--target", lserver.target, "--n", "6", "--seed", "3", "--quiet"]
    done = run_cli(*common, "--out", str(out), "--concept", "label:2")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "generate.json").read_text())["concept"] == "label:2"
    with VaeClient(lserver.target) as c:
        want = c.sample(6, seed=3, concept="label:2", format="png").png
    assert want == [(out / f"{i:06d}.png").read_bytes() for i in range(6)]
    mixed = run_cli(*common, "--out", str(out))  # the prior into a folder of label:2 images
    assert mixed.returncode == 2 and "concept='label:2', not ''" in mixed.stderr
