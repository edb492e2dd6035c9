"""Export: a tiny random model exports, loads, runs at any batch size, and carries its metadata;
broken or inconsistent repositories fail with messages that name the file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from tests.conftest import save_untrained_checkpoint
from vaeserve.export.onnx_eval import cpu_session, onnx_elbo
from vaeserve.export.onnx_export import ExportError, export_model
from vaeserve.service.repository import (
    ModelNotFoundError,
    ModelRepository,
    RepositoryError,
    check_io,
    read_model,
    sha256_file,
)
from vaeserve.training.checkpoint import load_model


@pytest.fixture
def repo(tmp_path, tiny_repository):
    """A private, writable copy of the tiny repository."""
    return shutil.copytree(tiny_repository, tmp_path / "repo")


def test_tiny_model_exports_and_loads(tiny_repository):
    spec = read_model(tiny_repository / "tiny" / "1")
    assert (spec.name, spec.version, spec.latent_dim) == ("tiny", 1, 3)
    assert spec.image_shape == (1, 12, 12)
    for graph in ("encoder", "decoder"):
        session = cpu_session(spec.graph_path(graph))
        check_io(spec, graph, session.get_inputs(), session.get_outputs())
        onnx.checker.check_model(str(spec.graph_path(graph)), full_check=True)
    assert sorted(p.name for p in spec.directory.iterdir()) == [
        "decoder.onnx",
        "encoder.onnx",
        "model.json",
    ]


@pytest.mark.parametrize("batch", [1, 7, 1024])
def test_dynamic_batch_matches_pytorch(tiny_repository, tmp_path, batch):
    spec = read_model(tiny_repository / "tiny" / "1")
    model, _ = load_model(save_untrained_checkpoint(tmp_path / "same.pt"))  # same seed, weights
    rng = np.random.default_rng(batch)
    images = rng.random((batch, 1, 12, 12), dtype=np.float32)
    z = rng.standard_normal((batch, 3)).astype(np.float32)
    mu, log_var = cpu_session(spec.graph_path("encoder")).run(None, {"image": images})
    (decoded,) = cpu_session(spec.graph_path("decoder")).run(None, {"z": z})
    with torch.no_grad():
        ref_mu, ref_lv = model.encode(torch.from_numpy(images))
        ref_img = model.decode(torch.from_numpy(z))
    assert mu.shape == (batch, 3) and decoded.shape == (batch, 1, 12, 12)
    np.testing.assert_allclose(mu, ref_mu.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(log_var, ref_lv.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(decoded, ref_img.numpy(), atol=1e-4, rtol=0)


def test_graphs_are_deterministic(tiny_repository):
    """No noise inside the graphs: the same input gives the same bytes."""
    spec = read_model(tiny_repository / "tiny" / "1")
    decoder = cpu_session(spec.graph_path("decoder"))
    z = np.ones((4, 3), dtype=np.float32)
    assert decoder.run(None, {"z": z})[0].tobytes() == decoder.run(None, {"z": z})[0].tobytes()


def test_metadata_round_trip(tiny_repository):
    directory = tiny_repository / "tiny" / "1"
    meta = json.loads((directory / "model.json").read_text())
    assert meta["name"] == "tiny" and meta["version"] == 1 and meta["latent_dim"] == 3
    assert meta["image"] == {
        "channels": 1,
        "height": 12,
        "width": 12,
        "layout": "NCHW",
        "dtype": "float32",
        "range": [0.0, 1.0],
    }
    assert meta["graphs"]["encoder"]["inputs"][0]["name"] == "image"
    assert [o["name"] for o in meta["graphs"]["encoder"]["outputs"]] == ["z_mean", "z_log_var"]
    assert meta["graphs"]["decoder"]["outputs"][0]["shape"] == ["batch", 1, 12, 12]
    assert meta["parity"]["encoder_max_abs_diff"] <= 1e-4
    assert set(meta["parity"]["encoder"]) == {
        f"{k}@{n}" for k in ("random", "real") for n in (1, 3, 64)
    }
    assert {"torch", "onnx", "onnxruntime", "vaeserve"} <= set(meta["exporter"])
    assert meta["created"] and meta["opset"] >= 17
    for graph in ("encoder", "decoder"):
        path = directory / f"{graph}.onnx"
        assert meta["graphs"][graph]["sha256"] == sha256_file(path)
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert props["vaeserve.name"] == "tiny" and props["vaeserve.latent_dim"] == "3"
        assert props["vaeserve.image_shape"] == "1x12x12"
        embedded = json.loads(props["vaeserve.model"])
        for key in (
            "name",
            "version",
            "latent_dim",
            "image",
            "opset",
            "training",
            "dataset",
            "metrics",
            "parity",
            "exporter",
            "created",
        ):
            assert embedded[key] == meta[key], key


def test_flipped_byte_is_caught(repo):
    path = repo / "tiny" / "1" / "encoder.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RepositoryError, match=r"encoder\.onnx: sha256 does not match"):
        read_model(repo / "tiny" / "1")


def test_missing_graph_and_missing_model_json(repo):
    (repo / "tiny" / "1" / "decoder.onnx").unlink()
    with pytest.raises(RepositoryError, match=r"decoder\.onnx: missing"):
        read_model(repo / "tiny" / "1")
    (repo / "tiny" / "1" / "model.json").unlink()
    with pytest.raises(RepositoryError, match=r"model\.json: missing"):
        read_model(repo / "tiny" / "1")


def test_model_json_with_mismatched_latent_sizes(repo):
    path = repo / "tiny" / "1" / "model.json"
    meta = json.loads(path.read_text())
    meta["graphs"]["decoder"]["inputs"][0]["shape"] = ["batch", 5]
    path.write_text(json.dumps(meta))
    with pytest.raises(RepositoryError, match=r"decoder inputs have shapes \[\['batch', 5\]\]"):
        read_model(repo / "tiny" / "1")


@pytest.mark.parametrize("inputs", [[1], [{"name": "z"}], "z", [{"shape": None}]])
def test_model_json_with_malformed_signatures_is_a_repository_error(repo, inputs):
    path = repo / "tiny" / "1" / "model.json"
    meta = json.loads(path.read_text())
    meta["graphs"]["encoder"]["inputs"] = inputs
    path.write_text(json.dumps(meta))
    with pytest.raises(RepositoryError, match=r"model\.json: "):
        read_model(repo / "tiny" / "1")


def test_graph_with_another_latent_size_fails_io_check(repo, tmp_path):
    """A decoder swapped in from a latent-5 model (checksum updated) fails on its signature."""
    other = tmp_path / "other"
    export_model(
        save_untrained_checkpoint(tmp_path / "l5.pt", latent_dim=5), other, "o", 1, batch_sizes=(2,)
    )
    target = repo / "tiny" / "1"
    shutil.copy(other / "o" / "1" / "decoder.onnx", target / "decoder.onnx")
    meta = json.loads((target / "model.json").read_text())
    meta["graphs"]["decoder"]["sha256"] = sha256_file(target / "decoder.onnx")
    (target / "model.json").write_text(json.dumps(meta))
    spec = read_model(target)
    session = cpu_session(spec.graph_path("decoder"))
    with pytest.raises(
        RepositoryError,
        match=r"decoder\.onnx: graph inputs are \[\('z', "
        r"\['batch', 5\]\)\], but model\.json says",
    ):
        check_io(spec, "decoder", session.get_inputs(), session.get_outputs())


def test_repository_versions_default_and_bad_neighbours(repo):
    shutil.copytree(repo / "tiny" / "1", repo / "tiny" / "3")
    meta = json.loads((repo / "tiny" / "3" / "model.json").read_text())
    meta["version"] = 3
    (repo / "tiny" / "3" / "model.json").write_text(json.dumps(meta))
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.json").write_text("{not json")
    repository = ModelRepository(repo).scan()
    assert sorted(repository.models["tiny"]) == [1, 3]
    assert repository.resolve().version == 3  # highest version is the default
    assert repository.resolve("tiny", 1).version == 1
    assert "not valid JSON" in repository.errors[str(repo / "broken" / "1")]
    with pytest.raises(ModelNotFoundError, match="unknown model 'nope'"):
        repository.resolve("nope")
    with pytest.raises(ModelNotFoundError, match=r"no version 2; it has \[1, 3\]"):
        repository.resolve("tiny", 2)


def test_empty_repository_is_an_error(tmp_path):
    with pytest.raises(RepositoryError, match="no servable model"):
        ModelRepository(tmp_path).scan()
    with pytest.raises(RepositoryError, match="does not exist"):
        ModelRepository(tmp_path / "nope").scan()


def test_failed_parity_writes_nothing(tmp_path):
    ckpt = save_untrained_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ExportError, match="parity failed"):
        export_model(ckpt, tmp_path / "r", "m", 1, batch_sizes=(2,), tolerance=1e-15)
    assert not (tmp_path / "r" / "m" / "1").exists()
    assert list((tmp_path / "r" / "m").iterdir()) == []  # no partial folder left behind


def test_existing_version_and_bad_names_refused(tiny_repository, tmp_path):
    ckpt = save_untrained_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ExportError, match="already exists"):
        export_model(ckpt, tiny_repository, "tiny", 1)
    with pytest.raises(ExportError, match="model name"):
        export_model(ckpt, tmp_path, "../evil", 1)
    with pytest.raises(ExportError, match="positive integer"):
        export_model(ckpt, tmp_path, "ok", 0)


def test_optimized_and_fp16_variants(tmp_path):
    ckpt = save_untrained_checkpoint(tmp_path / "c.pt", channels=3, height=9, width=10)
    result = export_model(
        ckpt, tmp_path / "r", "rgb", 2, batch_sizes=(1, 5), optimize=True, fp16=True
    )
    variants = result.meta["variants"]
    assert set(variants) == {
        "encoder_optimized",
        "decoder_optimized",
        "encoder_fp16",
        "decoder_fp16",
    }
    for variant in variants.values():
        path = result.directory / variant["file"]
        assert sha256_file(path) == variant["sha256"]
        assert variant["max_abs_diff"] <= variant["tolerance"]
    fp16 = cpu_session(result.directory / "decoder.fp16.onnx")
    out = fp16.run(None, {"z": np.zeros((2, 3), dtype=np.float32)})[0]
    assert out.dtype == np.float32 and out.shape == (2, 3, 9, 10)  # float32 I/O kept


def test_onnx_elbo_agrees_with_pytorch(tiny_repository, tmp_path):
    from vaeserve.training.train import evaluate_elbo

    spec = read_model(tiny_repository / "tiny" / "1")
    model, _ = load_model(save_untrained_checkpoint(tmp_path / "same.pt"))
    images = np.random.default_rng(0).integers(0, 256, (300, 1, 12, 12), dtype=np.uint8)
    onnx_result = onnx_elbo(
        cpu_session(spec.graph_path("encoder")),
        cpu_session(spec.graph_path("decoder")),
        images,
        seed=0,
    )
    torch_result = evaluate_elbo(model, images, torch.device("cpu"), seed=0)
    assert onnx_result["kl"] == pytest.approx(torch_result["kl"], rel=1e-4)
    # different noise streams (numpy vs torch): the means agree to Monte Carlo error
    assert onnx_result["nelbo"] == pytest.approx(torch_result["nelbo"], rel=0.01)


def test_a_fresh_models_zero_biases_survive_the_optimizer_that_drops_them(
    tiny_repository, tmp_path
):
    """Keras initialisation gives zero biases, which the ONNX optimizer removes from the graphs:
    the decoder is still rewritten to sub-pixel form, and the PyTorch model read back from the
    graphs has exactly the checkpoint's parameters."""
    from vaeserve.export.from_onnx import torch_model_from_spec

    spec = ModelRepository(tiny_repository).scan().resolve()
    decoder = onnx.load(str(spec.graph_path("decoder")))
    assert not any(i.name.endswith("bias") for i in decoder.graph.initializer)  # dropped
    assert spec.meta["exporter"]["decoder_rewrite"] == "subpixel"
    model, _ = load_model(save_untrained_checkpoint(tmp_path / "same.pt"))  # same seed, weights
    read_back = torch_model_from_spec(spec).state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(read_back[key], value), key
