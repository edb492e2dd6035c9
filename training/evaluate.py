"""`vaeserve evaluate`: the ELBO and the importance-weighted bound of a checkpoint on a dataset."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vaeserve.errors import InputError
from vaeserve.training import train as _train
from vaeserve.training.checkpoint import load_model, train_config_of
from vaeserve.training.data import load_dataset
from vaeserve.training.loss import iwae_bound
from vaeserve.training.train import evaluate_elbo, is_terminal, load_split, to_tensor

log = logging.getLogger(__name__)


def evaluate(
    checkpoint: Path,
    data: str | None = None,
    *,
    split: str = "all",
    iw_samples: int = 100,
    seed: int = 0,
    batch_size: int = 100,
    progress: bool = True,
) -> dict[str, Any]:
    """Per-image means in nats: NELBO, reconstruction, KL, and -log p(x) bounded with IWAE-K.

    `split` picks `all` images of `data`, or the checkpoint's own `train`/`val` split (which
    needs the same data the run trained on; `data` defaults to it).
    """
    if iw_samples < 1:
        raise InputError(f"iw-samples must be >= 1, got {iw_samples}")
    model, state = load_model(checkpoint)
    c, h, w = model.config.image_shape
    if split == "all":
        if data is None:
            raise InputError("--data is needed with --split all")
        images = load_dataset(data, channels=c, height=h, width=w).images
    elif split in ("train", "val"):
        cfg = train_config_of(state)
        if data is not None:
            cfg = cfg.__class__(**{**cfg.to_dict(), "data": data})
        _, train_set, val_set = load_split(cfg, channels=c, height=h, width=w)
        images = (train_set if split == "train" else val_set).images
    else:
        raise InputError(f"unknown split {split!r}: use all, train or val")
    if len(images) == 0:
        raise InputError(f"the {split} split is empty")

    device = torch.device("cpu")
    elbo = evaluate_elbo(model, images, device, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    bounds = []
    bar_on = progress and is_terminal(sys.stderr)  # a log file gets lines, not '\r' updates
    n_batches = -(-len(images) // batch_size)
    last_report = time.monotonic()
    for b in tqdm(
        range(n_batches),
        desc=f"IWAE-{iw_samples}",
        unit="batch",
        disable=not bar_on,
        leave=False,
    ):
        x = to_tensor(images[b * batch_size : (b + 1) * batch_size], device)
        bounds.append(iwae_bound(model, x, iw_samples, gen).numpy())
        now = time.monotonic()
        if progress and not bar_on and now - last_report >= _train.PROGRESS_EVERY_S:
            last_report = now
            log.info(
                "IWAE-%d: batch %d/%d (%d%%)",
                iw_samples,
                b + 1,
                n_batches,
                100 * (b + 1) // n_batches,
            )
    log_px = float(np.concatenate(bounds).mean())
    return {
        "checkpoint": str(checkpoint),
        "data": data or train_config_of(state).data,
        "split": split,
        "images": len(images),
        "nelbo": elbo["nelbo"],
        "recon": elbo["recon"],
        "kl": elbo["kl"],
        "iw_samples": iw_samples,
        "iwae_nll": -log_px,
        "units": "nats per image",
    }
