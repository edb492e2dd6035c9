"""A deeper network end to end: a depth-3, 64x64 RGB, Gaussian-likelihood VAE trains, exports
(sub-pixel rewrite of every stage, parity with PyTorch) and is served by the real server, whose
answers match the PyTorch model to 1e-4."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from tests.integration.conftest import running_server
from vaeserve.export.from_onnx import torch_model_from_spec
from vaeserve.export.onnx_eval import cpu_session, onnx_elbo
from vaeserve.export.onnx_export import export_model
from vaeserve.service.grpc.tensors import to_array, to_tensor
from vaeserve.service.repository import ModelRepository
from vaeserve.training.checkpoint import load_model
from vaeserve.training.config import TrainConfig
from vaeserve.training.loss import gaussian_kl, gaussian_nll
from vaeserve.training.synthetic import write_scenes_npz
from vaeserve.training.train import train
from vaeserve.v1 import vae_pb2 as pb
from vaeserve.v1 import vae_pb2_grpc

STAGES = (16, 32, 64)
LATENT = 8
PARITY = 1e-4


@pytest.fixture(scope="module")
def deep_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("deep")
    # Deeper Gaussian models take 50-150 steps before z is used (docs/training.md): 3 epochs of
    # 34 steps; seed 1 had 4 of 8 units active after the first, 8 after the second.
    data = write_scenes_npz(root / "scenes.npz", n=600, size=64, seed=3)
    cfg = TrainConfig(data=str(data), epochs=3, batch_size=16, seed=1)
    metrics = train(
        cfg,
        root / "run",
        latent_dim=LATENT,
        architecture={"stages": STAGES, "hidden": 64, "likelihood": "gaussian"},
        progress=False,
    )
    export_model(root / "run" / "checkpoint.pt", root / "repo", "scenes", 1, batch_sizes=(1, 5))
    return {"root": root, "metrics": metrics, "data": data}


def test_it_trains_and_the_scale_is_learnt(deep_run):
    history = deep_run["metrics"]["history"]
    assert len(history) == 3 and history[-1]["val_nelbo"] < history[0]["val_nelbo"]
    assert not deep_run["metrics"]["collapsed"] and history[-1]["active_units"] >= LATENT // 2
    model, _ = load_model(deep_run["root"] / "run" / "checkpoint.pt")
    assert model.config.stages == STAGES and model.config.likelihood == "gaussian"
    sigma = model.log_scale.exp()
    assert bool(((sigma > 0.01) & (sigma < 0.5)).all()), sigma  # the RMS error, not the start 1


def test_the_export_rewrites_every_stage_and_records_the_network(deep_run):
    spec = ModelRepository(deep_run["root"] / "repo").scan().resolve()
    meta = spec.meta
    assert meta["exporter"]["decoder_rewrite"] == "subpixel"
    ops = [n.op_type for n in onnx.load(str(spec.graph_path("decoder"))).graph.node]
    assert "ConvTranspose" not in ops and ops.count("DepthToSpace") == len(STAGES)
    assert meta["training"]["model_config"]["stages"] == list(STAGES)
    assert meta["likelihood"] == "gaussian" and len(meta["likelihood_scale"]) == 3
    parity = meta["parity"]
    assert parity["encoder_max_abs_diff"] <= PARITY and parity["decoder_max_abs_diff"] <= PARITY
    # PyTorch rebuilt from the graphs alone equals the checkpoint's model, scale included
    model, _ = load_model(deep_run["root"] / "run" / "checkpoint.pt")
    rebuilt = torch_model_from_spec(spec).state_dict()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(rebuilt[key], value, rtol=0, atol=1e-6, msg=key)


def test_the_onnx_elbo_uses_the_gaussian_with_the_recorded_scale(deep_run):
    spec = ModelRepository(deep_run["root"] / "repo").scan().resolve()
    images = np.load(deep_run["data"])["x_train"][:8]
    enc, dec = cpu_session(spec.graph_path("encoder")), cpu_session(spec.graph_path("decoder"))
    got = onnx_elbo(enc, dec, images, seed=5, scale=spec.meta["likelihood_scale"])
    model, _ = load_model(deep_run["root"] / "run" / "checkpoint.pt")
    x = torch.from_numpy(images).float() / 255
    with torch.no_grad():
        mu, log_var = model.encode(x)
        eps = np.random.default_rng(5).standard_normal(mu.shape).astype(np.float32)
        z = mu + torch.exp(0.5 * log_var) * torch.from_numpy(eps)
        recon = gaussian_nll(model.decode(z), model.log_scale, x)
        kl = gaussian_kl(mu, log_var)
    assert got["recon"] == pytest.approx(float(recon.mean()), rel=1e-4, abs=1e-2)
    assert got["kl"] == pytest.approx(float(kl.mean()), rel=1e-4, abs=1e-4)


def test_the_server_answers_as_pytorch_does(deep_run):
    model, _ = load_model(deep_run["root"] / "run" / "checkpoint.pt")
    images = np.load(deep_run["data"])["x_train"][:4].astype(np.float32) / 255
    z = np.random.default_rng(7).standard_normal((5, LATENT)).astype(np.float32)
    with torch.no_grad():
        want_mu, want_lv = (t.numpy() for t in model.encode(torch.from_numpy(images)))
        want_images = model.decode(torch.from_numpy(z)).numpy()
    import grpc

    with (
        running_server(deep_run["root"] / "repo", max_message_bytes=1 << 20) as server,
        grpc.insecure_channel(server.target) as channel,
    ):
        stub = vae_pb2_grpc.VaeServiceStub(channel)
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
        assert list(info.image_shape) == [3, 64, 64] and info.latent_dim == LATENT
        encoded = stub.Encode(pb.EncodeRequest(images=to_tensor(images)), timeout=60)
        decoded = stub.Decode(pb.DecodeRequest(latents=to_tensor(z)), timeout=60)
    np.testing.assert_allclose(to_array(encoded.z_mean, "m"), want_mu, atol=PARITY, rtol=0)
    np.testing.assert_allclose(to_array(encoded.z_log_var, "v"), want_lv, atol=PARITY, rtol=0)
    got = to_array(decoded.images, "images")
    assert got.shape == (5, 3, 64, 64)
    np.testing.assert_allclose(got, want_images, atol=PARITY, rtol=0)
    json.dumps(deep_run["metrics"]["final"])  # metrics stay JSON-serialisable
