"""The first optimiser steps must not switch off the ReLUs in front of z (docs/training.md, "Round
two"): Adam's first step moves every weight by about the learning rate, all 12,544 input weights
of a bottleneck unit the same way, and half of the 32 units die at once; the learning-rate
warm-up makes the first steps small."""

from __future__ import annotations

import pytest
import torch

from vaeserve.training.config import ModelConfig, TrainConfig
from vaeserve.training.model import VAE
from vaeserve.training.synthetic import make_shapes
from vaeserve.training.train import (
    kl_weight,
    learning_rate,
    make_optimizer,
    to_tensor,
    training_loss,
)

STEPS = 25


def alive_after_first_steps(seed: int, **settings: object) -> tuple[int, int]:
    """(bottleneck units positive for some image after step 1, after STEPS steps)."""
    images, _ = make_shapes(640, seed=1)
    cfg = TrainConfig(data="generated", seed=seed, **settings)
    torch.manual_seed(seed)
    model = VAE(ModelConfig())
    opt = make_optimizer(cfg, model)
    gen = torch.Generator().manual_seed(seed)
    probe = to_tensor(images[:256], torch.device("cpu"))
    alive = []
    for step in range(STEPS):
        start = (step * 32) % len(images)
        x = to_tensor(images[start : start + 32], torch.device("cpu"))
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step / 20, step)
        loss, *_ = training_loss(cfg, kl_weight(cfg, step / 20), model, x, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in (0, STEPS - 1):
            with torch.no_grad():
                alive.append(int((model.encoder.features(probe) > 0).any(dim=0).sum()))
    return alive[0], alive[1]


def test_the_default_warm_up_keeps_the_bottleneck_alive_through_the_first_steps():
    assert TrainConfig(data="x").lr_warmup_steps == 100
    for seed in (0, 1):
        first, later = alive_after_first_steps(seed)
        # measured: 32 after step 1, 14-16 after 25. Units still thin out later in the warm-up
        # (3-13 of 32 after 100 steps), but not in one step, and slowly enough to start on z.
        assert first >= 30, (seed, first, later)


@pytest.mark.parametrize("seed", [0, 1])
def test_without_it_adam_switches_half_of_them_off_in_one_step(seed):
    """The mechanism, kept as evidence: if this stops holding, the docs' explanation is stale."""
    first, later = alive_after_first_steps(seed, lr_warmup_steps=0)
    assert first <= 24 and later <= 12, (first, later)  # measured: 18-22, then 9-10


def test_radam_keeps_them_too():
    first, later = alive_after_first_steps(0, optimizer="radam", lr_warmup_steps=0)
    assert first >= 30 and later >= 24, (first, later)  # measured: 32, 31


def test_runs_recorded_before_the_warm_up_resume_without_one():
    old = TrainConfig(data="x").to_dict()
    del old["lr_warmup_steps"]
    assert TrainConfig.from_dict(old).lr_warmup_steps == 0
    assert TrainConfig.from_dict(TrainConfig(data="x").to_dict()).lr_warmup_steps == 100
