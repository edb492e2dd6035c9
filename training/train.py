"""The training loop: seeded split, KL warm-up or cycles, free bits, per-epoch validation and
posterior-collapse check, checkpoints and resume; one process, or several under torchrun
(DistributedDataParallel, training/distributed.py)."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vaeserve import __version__
from vaeserve.errors import UserError
from vaeserve.training.checkpoint import load_checkpoint, save_checkpoint, train_config_of
from vaeserve.training.collapse import (
    ADVICE,
    MEANING,
    CollapseTracker,
    PosteriorCollapse,
    active_units,
    kl_per_dim,
)
from vaeserve.training.config import ModelConfig, TrainConfig
from vaeserve.training.data import ImageData, load_dataset, split_indices
from vaeserve.training.distributed import Distributed, noise_seed, session, shard
from vaeserve.training.loss import (
    elbo_terms,
    free_bits_kl,
    gaussian_kl,
    optimal_log_scale,
    reconstruction_nll,
    squared_error_per_channel,
)
from vaeserve.training.model import VAE, count_parameters

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
EVAL_SEED = 0  # validation noise: its own fixed stream, so `vaeserve evaluate` reproduces it
STATS_MAX_IMAGES = 10_000  # active units and KL per dimension: plenty for a variance, and cheap
PROGRESS_EVERY_S = 30.0  # without a terminal: at most one progress line this often in an epoch


class DeviceUnavailable(UserError, ValueError):
    """The requested torch device cannot be used here."""


def resolve_device(name: str) -> torch.device:
    """`cuda` only when torch can really use it: a clear error instead of a late crash."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"--device cuda was asked for, but torch {torch.__version__} sees no CUDA device "
            "(CPU-only build, no GPU, or no driver); use --device cpu"
        )
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise DeviceUnavailable(f"unknown device {name!r}: use cpu or cuda")
    return torch.device(name)


def load_split(
    cfg: TrainConfig,
    *,
    channels: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> tuple[ImageData, ImageData, ImageData]:
    """(all, train, validation) exactly as training saw them: same limit, same seeded split."""
    data = load_dataset(cfg.data, channels=channels, height=height, width=width)
    if cfg.limit is not None:
        data = data.subset(np.arange(min(cfg.limit, len(data))))
    train_idx, val_idx = split_indices(len(data), cfg.val_fraction, cfg.seed)
    return data, data.subset(train_idx), data.subset(val_idx)


def kl_weight(cfg: TrainConfig, progress_epochs: float) -> float:
    """Linear KL warm-up from 0 to beta over `kl_warmup_epochs` (Bowman et al. 2016), or with
    `kl_cycles` the cyclical schedule (Fu et al. 2019): in each of M equal cycles of the run,
    0 -> beta over the first half, then beta. The run's end counts as the last cycle's end."""
    if cfg.kl_cycles > 0:
        if progress_epochs >= cfg.epochs:
            return cfg.beta
        period = cfg.epochs / cfg.kl_cycles
        position = (progress_epochs % period) / period
        return cfg.beta * min(1.0, 2.0 * position)
    if cfg.kl_warmup_epochs <= 0:
        return cfg.beta
    return cfg.beta * min(1.0, progress_epochs / cfg.kl_warmup_epochs)


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam (default) or RAdam over every parameter, at `cfg.lr`."""
    if cfg.optimizer == "radam":
        return torch.optim.RAdam(model.parameters(), lr=cfg.lr)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr)


def learning_rate(cfg: TrainConfig, progress_epochs: float, step: int) -> float:
    """The learning rate of optimiser step `step` (0-based) at a point of the run (in epochs):
    the linear warm-up over the first `lr_warmup_steps` steps, times the schedule: constant, or
    half a cosine from `lr` down to 0 at the run's end. A function of position alone, so resume
    stays exact."""
    rate = cfg.lr
    if cfg.lr_schedule == "cosine":
        rate *= 0.5 * (1.0 + math.cos(math.pi * min(progress_epochs / cfg.epochs, 1.0)))
    if step < cfg.lr_warmup_steps:
        rate *= (step + 1) / cfg.lr_warmup_steps
    return rate


@torch.no_grad()
def evaluate_elbo(
    model: VAE, images: np.ndarray, device: torch.device, seed: int, batch_size: int = 1000
) -> dict[str, float]:
    """Mean NELBO, reconstruction NLL and KL per image (nats), with seeded posterior noise."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    recon_sum = kl_sum = 0.0
    for start in range(0, len(images), batch_size):
        x = to_tensor(images[start : start + batch_size], device)
        recon, kl = elbo_terms(model, x, gen)
        recon_sum += float(recon.sum())
        kl_sum += float(kl.sum())
    n = max(len(images), 1)
    return {"nelbo": (recon_sum + kl_sum) / n, "recon": recon_sum / n, "kl": kl_sum / n}


class BatchTerms(NamedTuple):
    loss: torch.Tensor
    """What the optimiser minimises (free bits may floor the KL in it)."""
    recon: torch.Tensor
    """Reconstruction NLL per image: a true ELBO term."""
    kl: torch.Tensor
    """KL per image: a true ELBO term."""
    squared_error: torch.Tensor | None
    """Gaussian likelihood only: the batch's squared error per channel (for the epoch's sigma)."""


def training_loss(
    cfg: TrainConfig,
    weight: float,
    model: VAE,
    x: torch.Tensor,
    gen: torch.Generator,
    net: torch.nn.Module | None = None,
) -> BatchTerms:
    """The loss and ELBO terms of one batch. A Gaussian likelihood uses the batch's own optimal
    sigma per channel (loss.optimal_log_scale). `net` is what runs the forward pass when it is
    not `model` itself (its DistributedDataParallel wrapper, whose backward syncs gradients)."""
    logits, z_mean, z_log_var = (model if net is None else net)(x, gen)
    squared_error = log_scale = None
    if model.config.likelihood == "gaussian":
        squared_error = squared_error_per_channel(torch.sigmoid(logits), x)
        log_scale = optimal_log_scale(squared_error, x.shape[0] * x.shape[2] * x.shape[3])
    recon = reconstruction_nll(model, logits, x, log_scale)
    kl = gaussian_kl(z_mean, z_log_var)
    if cfg.free_bits > 0:
        loss = recon.mean() + weight * free_bits_kl(z_mean, z_log_var, cfg.free_bits)
    else:
        loss = (recon + weight * kl).mean()
    return BatchTerms(loss, recon, kl, squared_error)


@torch.no_grad()
def latent_statistics(
    model: VAE, images: np.ndarray, device: torch.device, batch_size: int = 1000
) -> dict[str, Any]:
    """Active units and KL per dimension from the posterior means and variances (no noise, so
    the training RNG stream is untouched and resume stays exact)."""
    model.eval()
    images = images[:STATS_MAX_IMAGES]
    means, log_vars = [], []
    for start in range(0, len(images), batch_size):
        mu, log_var = model.encode(to_tensor(images[start : start + batch_size], device))
        means.append(mu.cpu().numpy())
        log_vars.append(log_var.cpu().numpy())
    if not means:
        return {"active_units": 0, "kl_per_dim": []}
    z_mean, z_log_var = np.concatenate(means), np.concatenate(log_vars)
    return {"active_units": active_units(z_mean), "kl_per_dim": kl_per_dim(z_mean, z_log_var)}


def is_terminal(stream: TextIO) -> bool:
    """Whether `stream` is a terminal: only there does a carriage-return progress bar help."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 N x C x H x W to float32 in [0, 1] on `device`: converted there, after the copy,
    so a GPU receives a quarter of the bytes (`vaeserve.imaging.to_float` is the numpy one)."""
    return torch.from_numpy(images).to(device).float().div_(255.0)


def train(
    cfg: TrainConfig,
    out_dir: Path,
    *,
    latent_dim: int = 2,
    channels: int | None = None,
    height: int | None = None,
    width: int | None = None,
    architecture: Mapping[str, Any] | None = None,
    resume: bool = False,
    progress: bool = True,
    progress_stream: TextIO | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run in `out_dir`; returns the metrics also written to metrics.json.

    Image shape settings left as None are taken from the data; `architecture` holds any other
    ModelConfig fields (stem, stages, hidden, likelihood), the book's network where absent.
    Progress: a tqdm bar on `progress_stream` (default stderr) when it is a terminal; otherwise
    (a log file, a pipe) a logged line at most every PROGRESS_EVERY_S seconds of an epoch, so
    logs hold no '\\r'.
    Under torchrun (WORLD_SIZE > 1) every process calls this with the same arguments: each
    trains on its share of every global batch (`cfg.batch_size` images) through
    DistributedDataParallel, and only rank 0 logs and writes files (training/distributed.py).
    Raises PosteriorCollapse (after writing the checkpoint) with `cfg.fail_on_collapse`.
    """
    with session(cfg.device) as here:
        return _train(
            cfg,
            Path(out_dir),
            here,
            latent_dim=latent_dim,
            channels=channels,
            height=height,
            width=width,
            architecture=architecture,
            resume=resume,
            progress=progress,
            progress_stream=progress_stream,
        )


def _silent(*args: Any, **kwargs: Any) -> None:
    """The INFO log of a process other than rank 0: rank 0 speaks for the run."""


def _train(
    cfg: TrainConfig,
    out_dir: Path,
    here: Distributed,
    *,
    latent_dim: int,
    channels: int | None,
    height: int | None,
    width: int | None,
    architecture: Mapping[str, Any] | None,
    resume: bool,
    progress: bool,
    progress_stream: TextIO | None,
) -> dict[str, Any]:
    """`train` in one process of the run (`here`); a single process when `here` is disabled."""
    info = log.info if here.is_main else _silent
    ckpt_path = out_dir / CHECKPOINT
    state: dict[str, Any] | None = None
    if resume:
        state = load_checkpoint(ckpt_path)
        cfg = replace(
            train_config_of(state),
            epochs=cfg.epochs,
            device=cfg.device,
            fail_on_collapse=cfg.fail_on_collapse,
        )
        model_cfg = ModelConfig.from_dict(state["model_config"])
    else:
        model_cfg = None
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(here.device(cfg.device))

    if model_cfg is not None:
        channels, height, width = model_cfg.image_shape
    data, train_set, val_set = load_split(cfg, channels=channels, height=height, width=width)
    if model_cfg is None:
        c, h, w = data.image_shape
        model_cfg = ModelConfig(
            height=h, width=w, channels=c, latent_dim=latent_dim, **dict(architecture or {})
        )
    info(
        "data %s: %d train, %d validation images of %s",
        data.source,
        len(train_set),
        len(val_set),
        "x".join(map(str, model_cfg.image_shape)),
    )

    torch.manual_seed(cfg.seed)  # weight initialisation (the same on every process)
    model = VAE(model_cfg).to(device)
    optimizer = make_optimizer(cfg, model)
    # Shuffling, and with one process the posterior noise too. With several, every process
    # draws the same permutations from it, and its noise comes from its own generator (on its
    # device), reseeded at each epoch's start from (seed, epoch, rank).
    gen = torch.Generator().manual_seed(cfg.seed)
    noise = torch.Generator(device=device) if here.enabled else gen
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["rng"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])
        info("resuming %s at epoch %d of %d", ckpt_path, start_epoch, cfg.epochs)
        if start_epoch >= cfg.epochs:
            info("nothing to do: the run already has %d epochs (raise --epochs)", start_epoch)
        saved_world = int(state.get("world_size", 1))
        if saved_world != here.world_size:
            info(
                "the checkpoint was written by %d process(es), this run has %d: weights, "
                "optimizer and shuffling continue, the posterior noise streams differ",
                saved_world,
                here.world_size,
            )
    net: torch.nn.Module = model
    if here.enabled:
        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        info(
            "distributed: %d processes (%s), global batch %d",
            here.world_size,
            here.backend,
            cfg.batch_size,
        )

    tracker = CollapseTracker.from_history(history)

    stream = sys.stderr if progress_stream is None else progress_stream
    bar_on = progress and here.is_main and is_terminal(stream)
    report_on = progress and here.is_main and not bar_on
    stats_set = val_set if len(val_set) else train_set
    dataset_info = data.describe()
    n_train = len(train_set)
    n_batches = math.ceil(n_train / cfg.batch_size)
    n_steps = n_batches  # with several processes, a last global batch too small to share is skipped
    if here.enabled and n_train - (n_batches - 1) * cfg.batch_size < here.world_size:
        n_steps -= 1
    n_seen = min(n_train, n_steps * cfg.batch_size)  # images trained on per epoch
    if here.enabled and n_steps == 0:
        raise UserError(
            f"{n_train} training images cannot be shared by {here.world_size} processes"
        )

    def current_metrics() -> dict[str, Any]:
        """metrics.json for the history so far (after every epoch, and once more at the end)."""
        return build_metrics(
            model,
            model_cfg,
            cfg,
            history,
            dataset_info,
            len(val_set),
            tracker.collapsed_at,
            here.world_size,
        )

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        net.train()
        if here.enabled:
            noise.manual_seed(noise_seed(cfg.seed, epoch, here.rank))
        perm = torch.randperm(n_train, generator=gen).numpy()
        sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
        squared_sum: torch.Tensor | None = None
        bar = tqdm(
            range(n_steps),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            disable=not bar_on,
            leave=False,
            mininterval=0.5,
            file=stream,
        )
        last_report = time.monotonic()
        for b in bar:
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            mine = shard(idx, here)
            x = to_tensor(train_set.images[mine], device)
            weight = kl_weight(cfg, epoch + b / n_batches)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, epoch + b / n_batches, epoch * n_steps + b)
            loss, recon, kl, squared_error = training_loss(cfg, weight, model, x, noise, net)
            if squared_error is not None:
                squared_sum = squared_error + (0 if squared_sum is None else squared_sum)
            optimizer.zero_grad(set_to_none=True)
            if here.enabled:
                # DDP averages the processes' gradients; weighting each by its share of the
                # global batch (shards differ by at most one image) makes that the global mean.
                (loss * (len(mine) * here.world_size / len(idx))).backward()
            else:
                loss.backward()
            optimizer.step()
            batch = {
                "loss": float(loss.detach()),
                "recon": float(recon.detach().mean()),
                "kl": float(kl.detach().mean()),
            }
            for key, value in batch.items():
                sums[key] += value * len(mine)
            bar.set_postfix(loss=f"{batch['loss']:.2f}", kl=f"{batch['kl']:.2f}")
            now = time.monotonic()
            report = report_on and b + 1 < n_steps
            if report and now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                log.info(
                    "epoch %d/%d: batch %d/%d (%d%%), loss=%.3f, kl=%.3f",
                    epoch + 1,
                    cfg.epochs,
                    b + 1,
                    n_steps,
                    100 * (b + 1) // n_steps,
                    batch["loss"],
                    batch["kl"],
                )
        if here.enabled:  # the epoch's figures over every process's images
            sums = here.sum_values(sums, device)
            if squared_sum is not None:
                here.all_reduce_sum(squared_sum)
        if squared_sum is not None:  # evaluation's sigma: this epoch's optimum
            pixels = n_seen * model_cfg.height * model_cfg.width
            model.log_scale.copy_(optimal_log_scale(squared_sum, pixels))
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "kl_weight": kl_weight(cfg, epoch + 1),
            "train_loss": sums["loss"] / n_seen,
            "train_nelbo": (sums["recon"] + sums["kl"]) / n_seen,
        }
        # Rank 0 measures (the weights are the same everywhere) and every process gets its
        # figures, so all of them take the same collapse decision.
        measured: dict[str, Any] | None = None
        if here.is_main:
            measured = {}
            if len(val_set):
                val = evaluate_elbo(model, val_set.images, device, EVAL_SEED)
                measured.update({f"val_{k}": v for k, v in val.items()})
            measured.update(latent_statistics(model, stats_set.images, device))
        row.update(here.broadcast(measured))
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        info(
            "epoch %d/%d %s active=%d/%d",
            epoch + 1,
            cfg.epochs,
            " ".join(
                f"{k}={v:.3f}"
                for k, v in row.items()
                if k not in ("epoch", "active_units", "kl_per_dim")
            ),
            row["active_units"],
            model_cfg.latent_dim,
        )
        just_collapsed = tracker.update(epoch + 1, row["active_units"])
        if just_collapsed and here.is_main:
            log.warning(
                "%s (active=0/%d for %d epochs in a row, at epoch %d); %s",
                MEANING,
                model_cfg.latent_dim,
                tracker.patience,
                epoch + 1,
                ADVICE,
            )
        if here.is_main:
            save_checkpoint(
                ckpt_path,
                {
                    "model_config": model_cfg.to_dict(),
                    "train_config": cfg.to_dict(),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": gen.get_state(),
                    "epoch": epoch + 1,
                    "history": history,
                    "dataset": dataset_info,
                    "versions": versions(),
                    "world_size": here.world_size,
                },
            )
            (out_dir / METRICS).write_text(json.dumps(current_metrics(), indent=2) + "\n")
        here.barrier()  # no process starts the next epoch (or stops) before the checkpoint
        if just_collapsed and cfg.fail_on_collapse:
            raise PosteriorCollapse(
                f"posterior collapse at epoch {epoch + 1} (no active latent unit for "
                f"{tracker.patience} epochs; checkpoint and metrics written to {out_dir}), "
                f"stopped by --fail-on-collapse; {ADVICE}"
            )

    metrics = current_metrics()
    if here.is_main:
        (out_dir / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
        from vaeserve.training.pictures import write_pictures  # matplotlib only when needed

        write_pictures(model.cpu(), val_set if len(val_set) else train_set, out_dir, seed=cfg.seed)
    here.barrier()  # the run ends for every process once rank 0's files are written
    return metrics


def versions() -> dict[str, str]:
    return {"vaeserve": __version__, "torch": str(torch.__version__), "numpy": np.__version__}


def build_metrics(
    model: VAE,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    history: list[dict[str, Any]],
    dataset: dict[str, Any],
    n_val: int,
    collapsed_at: int | None = None,
    world_size: int = 1,
) -> dict[str, Any]:
    last = history[-1] if history else {}
    return {
        "final": {
            k: v for k, v in last.items() if k.startswith(("val_", "train_")) or k == "active_units"
        },
        "collapsed": collapsed_at is not None,
        "collapsed_epoch": collapsed_at,
        "epochs": len(history),
        "train_seconds": sum(r["seconds"] for r in history),
        "parameters": {
            "encoder": count_parameters(model.encoder),
            "decoder": count_parameters(model.decoder),
        },
        "validation_images": n_val,
        "model_config": model_cfg.to_dict(),
        "train_config": cfg.to_dict(),
        "dataset": dataset,
        "versions": versions(),
        "world_size": world_size,
        "history": history,
    }
