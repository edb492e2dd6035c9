"""Training on generated data: the loss falls, checkpoints round-trip, resume is exact."""

from __future__ import annotations

import json

import pytest
import torch

from vaeserve.training.checkpoint import CheckpointError, load_checkpoint, load_model
from vaeserve.training.config import TrainConfig
from vaeserve.training.evaluate import evaluate
from vaeserve.training.train import DeviceUnavailable, kl_weight, resolve_device, train


def _cfg(data, **kw) -> TrainConfig:
    base = {
        "data": str(data),
        "epochs": 3,
        "batch_size": 8,  # RAdam starts with small steps: 36 steps an epoch, not 9
        "kl_warmup_epochs": 1.0,
        "num_threads": 1,
    }
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes_npz):
    out = tmp_path_factory.mktemp("run")
    metrics = train(_cfg(shapes_npz), out, latent_dim=2, progress=False)
    return out, metrics


def test_tiny_run_lowers_the_loss_and_writes_everything(trained):
    out, metrics = trained
    history = metrics["history"]
    assert len(history) == 3
    assert history[-1]["val_nelbo"] < history[0]["val_nelbo"] - 5
    assert history[-1]["train_nelbo"] < history[0]["train_nelbo"]
    for name in (
        "checkpoint.pt",
        "metrics.json",
        "samples.png",
        "reconstructions.png",
        "latent_grid.png",
        "latent_scatter.png",
    ):
        assert (out / name).stat().st_size > 0, name
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["final"]["val_nelbo"] == pytest.approx(history[-1]["val_nelbo"])
    assert on_disk["validation_images"] == 32  # 10% of 320
    assert on_disk["model_config"] == {
        "height": 12,
        "width": 12,
        "channels": 1,
        "latent_dim": 2,
        "stem": 32,
        "stages": [64],
        "hidden": 32,
        "likelihood": "bernoulli",
    }
    assert len(on_disk["dataset"]["md5"]) == 32


def test_checkpoint_round_trip(trained, shapes_npz):
    out, metrics = trained
    model, state = load_model(out / "checkpoint.pt")
    assert state["epoch"] == 3 and state["train_config"]["data"] == str(shapes_npz)
    x = torch.rand(5, 1, 12, 12)
    again, _ = load_model(out / "checkpoint.pt")
    torch.testing.assert_close(model.encode(x), again.encode(x), rtol=0, atol=0)
    result = evaluate(out / "checkpoint.pt", split="val", iw_samples=8, progress=False)
    # evaluation on the run's validation split reproduces the run's own figure
    assert result["images"] == 32
    assert result["nelbo"] == pytest.approx(metrics["final"]["val_nelbo"], rel=1e-5)
    assert result["iwae_nll"] <= result["nelbo"] + 0.5


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, shapes_npz):
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    train(_cfg(shapes_npz, epochs=2, limit=128), straight, progress=False)
    train(_cfg(shapes_npz, epochs=1, limit=128), parts, progress=False)
    train(_cfg(shapes_npz, epochs=2, limit=128), parts, resume=True, progress=False)
    a = load_checkpoint(straight / "checkpoint.pt")
    b = load_checkpoint(parts / "checkpoint.pt")
    assert b["epoch"] == 2 and len(b["history"]) == 2
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, shapes_npz):
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        train(_cfg(shapes_npz, epochs=1, limit=64, seed=seed), tmp_path / name, progress=False)
        runs[name] = load_checkpoint(tmp_path / name / "checkpoint.pt")["model"]
    key = "encoder.z_mean.weight"
    assert torch.equal(runs["a"][key], runs["b"][key])
    assert not torch.equal(runs["a"][key], runs["c"][key])


def test_kl_warmup_ramps_to_beta():
    cfg = TrainConfig(data="x", beta=2.0, kl_warmup_epochs=4)
    assert [kl_weight(cfg, e) for e in (0, 1, 4, 9)] == [0.0, 0.5, 2.0, 2.0]
    assert kl_weight(TrainConfig(data="x", kl_warmup_epochs=0), 0) == 1.0


def test_resume_without_checkpoint_and_bad_checkpoint(tmp_path, shapes_npz):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        train(_cfg(shapes_npz), tmp_path / "nothing", resume=True, progress=False)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        load_checkpoint(tmp_path / "junk.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error():
    with pytest.raises(DeviceUnavailable, match="no CUDA device"):
        resolve_device("cuda")


@pytest.mark.gpu
def test_training_on_cuda(tmp_path, shapes_npz):
    metrics = train(_cfg(shapes_npz, epochs=1, device="cuda"), tmp_path, progress=False)
    assert metrics["final"]["val_nelbo"] > 0
