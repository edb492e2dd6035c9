"""The bundled default model: loads from package data, runs without torch, matches PyTorch, and
is as good on its validation images as its model.json says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaeserve.export.from_onnx import torch_model_from_spec
from vaeserve.service.repository import ModelRepository, bundled_repository

MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "mnist"
MNIST_IMAGES = MNIST / "t10k-images-idx3-ubyte.gz"
NELBO_LIMIT = 155.0


@pytest.fixture(scope="module")
def spec():
    return ModelRepository(bundled_repository()).scan().resolve()


def test_bundled_model_is_found_and_small(spec):
    assert spec.name == "mnist" and spec.latent_dim == 2 and spec.image_shape == (1, 28, 28)
    total = sum(p.stat().st_size for p in spec.directory.iterdir())
    assert total < 3_000_000, total
    meta = spec.meta
    assert meta["command"] == "make default-model"
    assert meta["dataset"]["md5"] == "9fb629c4189551a2d022fa330f9573f3"
    assert meta["metrics"]["onnx_validation"]["nelbo"] <= NELBO_LIMIT
    assert meta["metrics"]["training"]["val_kl"] >= 3.0  # the latent is used


def test_runs_without_torch_and_matches_pytorch(spec, tmp_path):
    out = tmp_path / "outputs.npz"
    script = f"""
import sys
sys.modules["torch"] = None  # as on a serving machine: importing torch must fail
import numpy as np
from vaeserve.export.onnx_eval import cpu_session
from vaeserve.service.repository import ModelRepository, bundled_repository
spec = ModelRepository(bundled_repository()).scan().resolve()
enc = cpu_session(spec.graph_path("encoder"))
dec = cpu_session(spec.graph_path("decoder"))
rng = np.random.default_rng(0)
arrays = {{}}
for n in (1, 7, 1024):
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    z = rng.standard_normal((n, 2)).astype(np.float32)
    arrays[f"x{{n}}"], arrays[f"z{{n}}"] = x, z
    arrays[f"mu{{n}}"], arrays[f"lv{{n}}"] = enc.run(None, {{"image": x}})
    arrays[f"img{{n}}"] = dec.run(None, {{"z": z}})[0]
assert "torch" not in sys.modules or sys.modules["torch"] is None
np.savez({str(out)!r}, **arrays)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    arrays = np.load(out)
    model = torch_model_from_spec(spec)  # PyTorch rebuilt from the graphs' initializers
    with torch.no_grad():
        for n in (1, 7, 1024):
            mu, lv = model.encode(torch.from_numpy(arrays[f"x{n}"]))
            img = model.decode(torch.from_numpy(arrays[f"z{n}"]))
            assert arrays[f"img{n}"].shape == (n, 1, 28, 28)
            np.testing.assert_allclose(arrays[f"mu{n}"], mu.numpy(), atol=1e-4, rtol=0)
            np.testing.assert_allclose(arrays[f"lv{n}"], lv.numpy(), atol=1e-4, rtol=0)
            np.testing.assert_allclose(arrays[f"img{n}"], img.numpy(), atol=1e-4, rtol=0)


@pytest.mark.skipif(not MNIST_IMAGES.is_file(), reason=f"MNIST files not at {MNIST}")
def test_validation_nelbo_from_onnx_graphs(spec):
    from vaeserve.export.onnx_eval import cpu_session, onnx_elbo
    from vaeserve.training.data import dataset_md5, load_dataset, split_indices

    meta = spec.meta
    assert dataset_md5(MNIST_IMAGES) == meta["dataset"]["md5"]
    cfg = meta["training"]["train_config"]
    data = load_dataset(MNIST_IMAGES)
    _, val_idx = split_indices(len(data), cfg["val_fraction"], cfg["seed"])
    assert len(val_idx) == 1000
    result = onnx_elbo(
        cpu_session(spec.graph_path("encoder")),
        cpu_session(spec.graph_path("decoder")),
        data.images[val_idx],
        seed=0,
    )
    assert result["nelbo"] <= NELBO_LIMIT
    assert result["nelbo"] == pytest.approx(meta["metrics"]["onnx_validation"]["nelbo"], abs=1e-3)
    print(json.dumps(result))
