"""Posterior collapse: measured every epoch, warned about, optionally fatal, refused by export;
and the remedies (free bits, cyclical KL annealing) change the loss and weight as documented."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from vaeserve.export.onnx_export import ExportError, export_model
from vaeserve.training.collapse import (
    CollapseTracker,
    PosteriorCollapse,
    active_units,
    collapse_verdict,
    kl_per_dim,
)
from vaeserve.training.config import ModelConfig, TrainConfig
from vaeserve.training.loss import free_bits_kl, gaussian_kl
from vaeserve.training.model import VAE
from vaeserve.training.synthetic import write_shapes_npz
from vaeserve.training.train import kl_weight, train, training_loss

WARNING_TEXT = "posterior collapse: no latent dimension is active"


def _cfg(data, **kw) -> TrainConfig:
    base = {"data": str(data), "epochs": 3, "batch_size": 32, "num_threads": 1}
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def healthy_npz(tmp_path_factory):
    """Enough images (1,000 at 12x12, batch 16) that 3 epochs use the latent from epoch 1."""
    return write_shapes_npz(
        tmp_path_factory.mktemp("data") / "shapes1k.npz", n=1000, seed=1, height=12, width=12
    )


@pytest.fixture(scope="module")
def collapsed_run(tmp_path_factory, shapes_npz):
    """A run with a KL weight of 1,000 from the first batch: the encoder is pushed to the prior."""
    out = tmp_path_factory.mktemp("collapsed")
    metrics = train(_cfg(shapes_npz, beta=1000.0, kl_warmup_epochs=0.0), out, progress=False)
    return out, metrics


# --- the measures -------------------------------------------------------------------------------


def test_active_units_counts_dimensions_whose_posterior_mean_varies():
    rng = np.random.default_rng(0)
    z = np.zeros((500, 3))
    assert active_units(z) == 0
    z[:, 1] = rng.normal(0.0, 1.0, 500)  # variance ~1: active
    z[:, 2] = 5.0 + rng.normal(0.0, 0.05, 500)  # variance ~0.0025: a constant mean, inactive
    assert active_units(z) == 1
    assert active_units(z, threshold=0.001) == 2


def test_kl_per_dim_sums_to_the_closed_form_kl():
    rng = np.random.default_rng(1)
    mu, log_var = rng.normal(size=(64, 4)), rng.normal(size=(64, 4))
    per_dim = kl_per_dim(mu, log_var)
    assert len(per_dim) == 4
    total = gaussian_kl(torch.from_numpy(mu), torch.from_numpy(log_var)).mean()
    assert sum(per_dim) == pytest.approx(float(total), rel=1e-12)
    assert kl_per_dim(np.zeros((3, 2)), np.zeros((3, 2))) == [0.0, 0.0]  # q = prior


def test_tracker_needs_two_epochs_in_a_row():
    tracker = CollapseTracker()
    assert [tracker.update(e, a) for e, a in [(1, 0), (2, 1), (3, 0)]] == [False] * 3
    assert tracker.update(4, 0) is True and tracker.collapsed_at == 4
    assert tracker.update(5, 0) is False  # reported once
    assert tracker.update(6, 2) is False and tracker.collapsed_at == 4  # stays suspect
    history = [{"epoch": 1, "active_units": 0}, {"epoch": 2}, {"epoch": 3, "active_units": 0}]
    assert CollapseTracker.from_history(history).collapsed_at is None  # old rows break streaks
    assert collapse_verdict([*history, {"epoch": 4, "active_units": 1}]) is None
    assert "final epoch (3)" in str(
        collapse_verdict([{"epoch": 2}, {"epoch": 3, "active_units": 0}])
    )
    assert collapse_verdict([], {"collapsed": True, "collapsed_epoch": 7}) is not None


# --- detection in real runs ---------------------------------------------------------------------


def test_collapse_is_detected_recorded_and_warned(tmp_path, shapes_npz, caplog):
    with caplog.at_level(logging.INFO, logger="vaeserve.training.train"):
        metrics = train(
            _cfg(shapes_npz, beta=1000.0, kl_warmup_epochs=0.0), tmp_path, progress=False
        )
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["collapsed"] is True and on_disk["collapsed_epoch"] == 2
    assert metrics["collapsed"] is True
    for row in on_disk["history"]:
        assert row["active_units"] == 0 and len(row["kl_per_dim"]) == 2
        assert max(row["kl_per_dim"]) < 0.01
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and WARNING_TEXT in warnings[0].getMessage()
    assert "--free-bits" in warnings[0].getMessage() and "--kl-cycles" in warnings[0].getMessage()
    assert "active=0/2" in caplog.text


def test_healthy_run_stays_silent(tmp_path, healthy_npz, caplog):
    with caplog.at_level(logging.INFO, logger="vaeserve.training.train"):
        metrics = train(
            _cfg(healthy_npz, batch_size=16, kl_warmup_epochs=1.0), tmp_path, progress=False
        )
    assert metrics["collapsed"] is False and metrics["collapsed_epoch"] is None
    assert all(r["active_units"] >= 1 for r in metrics["history"])
    assert metrics["final"]["active_units"] >= 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert re.search(r"epoch 3/3 .* active=[12]/2", caplog.text)


def test_fail_on_collapse_stops_after_writing(tmp_path, shapes_npz):
    cfg = _cfg(shapes_npz, epochs=5, beta=1000.0, kl_warmup_epochs=0.0, fail_on_collapse=True)
    with pytest.raises(PosteriorCollapse, match="posterior collapse at epoch 2"):
        train(cfg, tmp_path, progress=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["collapsed"] is True
    assert (tmp_path / "checkpoint.pt").is_file()
    assert not (tmp_path / "samples.png").exists()  # stopped before the end-of-run pictures


def test_fail_on_collapse_cli_is_one_line_and_nonzero(tmp_path, shapes_npz):
    args = [
        "--data",
        str(shapes_npz),
        "--out",
        str(tmp_path / "r"),
        "--epochs",
        "4",
        "--limit",
        "96",
        "--beta",
        "1000",
        "--kl-warmup",
        "0",
        "--fail-on-collapse",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "vaeserve", "train", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("vaeserve train: error: posterior collapse at epoch 2")
    assert "--fail-on-collapse" in last and "--free-bits" in last


# --- export -------------------------------------------------------------------------------------


def test_export_refuses_a_collapsed_checkpoint_unless_allowed(tmp_path, collapsed_run):
    out, _ = collapsed_run
    with pytest.raises(ExportError, match="posterior collapse") as info:
        export_model(out / "checkpoint.pt", tmp_path / "repo", "m", 1, batch_sizes=(2,))
    message = str(info.value)
    assert "\n" not in message and "--allow-collapsed" in message and "--seed" in message
    assert not (tmp_path / "repo" / "m" / "1").exists()
    result = export_model(
        out / "checkpoint.pt", tmp_path / "repo", "m", 1, batch_sizes=(2,), allow_collapsed=True
    )
    assert (result.directory / "encoder.onnx").is_file()


def test_export_help_has_a_separate_allow_collapsed_flag():
    from vaeserve.cli import build_parser

    args = build_parser().parse_args(
        [
            "export",
            "--checkpoint",
            "c",
            "--repository",
            "r",
            "--name",
            "n",
            "--version",
            "1",
            "--allow-collapsed",
        ]
    )
    assert args.allow_collapsed is True and args.force is False


# --- remedies -----------------------------------------------------------------------------------


def test_kl_cycles_ramp_over_the_first_half_of_each_cycle():
    cfg = TrainConfig(data="x", epochs=8, beta=2.0, kl_cycles=2, kl_warmup_epochs=5)
    progress = [0, 1, 2, 3, 3.99, 4, 5, 6, 7.5, 8]
    assert [kl_weight(cfg, p) for p in progress] == [
        0.0,
        1.0,
        2.0,
        2.0,
        2.0,
        0.0,
        1.0,
        2.0,
        2.0,
        2.0,
    ]
    off = TrainConfig(data="x", epochs=8, beta=2.0, kl_warmup_epochs=4)  # default: the warm-up
    assert [kl_weight(off, p) for p in (0, 2, 4, 6)] == [0.0, 1.0, 2.0, 2.0]


def test_free_bits_floor_each_dimensions_batch_mean_kl():
    mu = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # dimension 0: KL 0.5 each; dimension 1: 0
    log_var = torch.zeros(2, 2)
    assert float(free_bits_kl(mu, log_var, 0.0)) == pytest.approx(0.5)
    assert float(free_bits_kl(mu, log_var, 0.2)) == pytest.approx(0.5 + 0.2)
    assert float(free_bits_kl(mu, log_var, 1.0)) == pytest.approx(2.0)


def test_free_bits_change_the_training_loss_only():
    torch.manual_seed(0)
    model = VAE(ModelConfig(height=12, width=12, latent_dim=3))
    x = torch.rand(8, 1, 12, 12)
    plain_cfg = TrainConfig(data="x")
    fb_cfg = TrainConfig(data="x", free_bits=50.0)  # far above any dimension's KL here
    loss, recon, kl, _ = training_loss(plain_cfg, 0.5, model, x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(loss, (recon + 0.5 * kl).mean())
    fb_loss, fb_recon, fb_kl, _ = training_loss(
        fb_cfg, 0.5, model, x, torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(fb_recon, recon)  # reported terms stay the true ELBO's
    torch.testing.assert_close(fb_kl, kl)
    torch.testing.assert_close(fb_loss, recon.mean() + 0.5 * 3 * 50.0)
    # every dimension under the floor: the KL term pushes the encoder nowhere
    kl_part = fb_loss - fb_recon.mean()
    (grad,) = torch.autograd.grad(kl_part, model.encoder.z_mean.weight)
    assert float(grad.abs().max()) == 0.0
    (plain_grad,) = torch.autograd.grad(loss - recon.mean(), model.encoder.z_mean.weight)
    assert float(plain_grad.abs().max()) > 0.0


def test_train_help_lists_the_new_flags():
    from vaeserve.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices["train"].format_help()
    for flag in ("--free-bits", "--kl-cycles", "--fail-on-collapse"):
        assert flag in text
    args = parser.parse_args(
        ["train", "--data", "d", "--out", "o", "--free-bits", "0.1", "--kl-cycles", "4"]
    )
    assert (args.free_bits, args.kl_cycles, args.fail_on_collapse) == (0.1, 4, False)
