"""Checkpoint files: weights, optimizer and RNG state, the full config, and the history so far.

Everything in the file is a tensor or a plain Python value, so it loads with
`torch.load(weights_only=True)`: opening a checkpoint never runs code from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vaeserve.errors import UserError
from vaeserve.training.config import ModelConfig, TrainConfig
from vaeserve.training.model import VAE

FORMAT = "vaeserve-checkpoint/1"


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable or not a vaeserve checkpoint."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically (temp file + rename), so an interrupted run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same here
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first_line})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vaeserve checkpoint (expected format {FORMAT})")
    return state


def load_model(path: Path) -> tuple[VAE, dict[str, Any]]:
    """Rebuild the VAE from a checkpoint, in eval mode, with the checkpoint's state."""
    state = load_checkpoint(path)
    model = VAE(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


def train_config_of(state: dict[str, Any]) -> TrainConfig:
    return TrainConfig.from_dict(state["train_config"])
