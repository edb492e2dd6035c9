"""Model and training settings: plain dataclasses, so a checkpoint stores them as a dict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from vaeserve.errors import InputError

LIKELIHOODS = ("bernoulli", "gaussian")
MAX_STAGES = 6  # 2**6 = 64x downsampling: past that the last grid of a 128x128 image is 2x2
MAX_CHANNELS = 1024


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the VAE: everything needed to rebuild the network from a checkpoint.

    The defaults are the book's network (section 8.4): a 32-channel convolution, one stride-2
    stage of 64 channels, two more 64-channel convolutions, a Dense 32 bottleneck; the decoder
    mirrors the stages with stride-2 transposed convolutions. More `stages` give larger images a
    real encoder and decoder (e.g. (32, 64, 128) for 64x64, (32, 64, 128, 256) for 128x128).
    Checkpoints written before these fields existed read back as the book's network."""

    height: int = 28
    """Image height in pixels."""
    width: int = 28
    """Image width in pixels."""
    channels: int = 1
    """1 (grey) or 3 (RGB)."""
    latent_dim: int = 2
    """Size of the latent vector z."""
    stem: int = 32
    """Channels of the first, full-resolution convolution (and of the decoder's last stage)."""
    stages: tuple[int, ...] = (64,)
    """Output channels of each stride-2 convolution, in order; each halves the grid (ceil)."""
    hidden: int = 32
    """Width of the Dense layer in front of z_mean and z_log_var."""
    likelihood: str = "bernoulli"
    """p(x | z): "bernoulli" (the book's, for near-binary images such as MNIST) or "gaussian"
    (natural images: a Gaussian around the decoder's output, its scale per channel each batch's
    optimum, Rybkin et al. 2021). The served graphs are the same either way: images in [0, 1]."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(int(c) for c in self.stages))
        if self.channels not in (1, 3):
            raise InputError(f"channels must be 1 or 3, got {self.channels}")
        if self.height < 2 or self.width < 2:
            raise InputError(f"image size must be at least 2x2, got {self.height}x{self.width}")
        if self.latent_dim < 1:
            raise InputError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if not 1 <= len(self.stages) <= MAX_STAGES:
            raise InputError(f"stages: 1 to {MAX_STAGES} stride-2 stages, got {len(self.stages)}")
        for what, value in [("stem", self.stem), ("hidden", self.hidden)] + [
            ("stage channels", c) for c in self.stages
        ]:
            if not 1 <= value <= MAX_CHANNELS:
                raise InputError(f"{what} must be in 1..{MAX_CHANNELS}, got {value}")
        if self.likelihood not in LIKELIHOODS:
            raise InputError(
                f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {self.likelihood!r}"
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W), the layout every tensor in the project uses."""
        return (self.channels, self.height, self.width)

    def grids(self) -> list[tuple[int, int]]:
        """(H, W) of the image and after each stride-2 stage: 3x3, stride 2, padding 1 (Keras
        'same') gives ceil(n / 2)."""
        sizes = [(self.height, self.width)]
        for _ in self.stages:
            h, w = sizes[-1]
            sizes.append(((h + 1) // 2, (w + 1) // 2))
        return sizes

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = list(self.stages)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


LR_SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "radam")


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained; stored whole in the checkpoint and in metrics.json."""

    data: str
    """Path of the dataset file or folder."""
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    """"adam", or "radam" (Liu et al. 2020: a built-in, slow warm-up of its own)."""
    lr_warmup_steps: int = 100
    """The learning rate ramps linearly from lr / N to lr over the first N optimiser steps
    (Goyal et al. 2017). Adam's first steps move every weight by about the learning rate, and all
    12,544 input weights of a bottleneck unit the same way (their gradients share the unit's
    sign), so without a warm-up one step switched off half of the 32 ReLUs in front of z and 25
    steps all but 6 (rotated MNIST, seed 9: posterior collapse for 4 epochs). docs/training.md,
    "Round two". 0 turns it off."""
    lr_schedule: str = "constant"
    """"constant", or "cosine": the learning rate falls from `lr` to 0 over the run along half a
    cosine (Loshchilov and Hutter 2017), so the last epochs stop hopping between minima (on
    MNIST the constant rate's validation NELBO moves by ~1-2 nats from one epoch to the next)."""
    beta: float = 1.0
    """Weight of the KL term (1 gives the true ELBO)."""
    kl_warmup_epochs: float = 5.0
    """Epochs over which the KL weight ramps linearly from 0 to beta; guards against posterior
    collapse, so that even a 2-D latent model uses its latent."""
    kl_cycles: int = 0
    """Cyclical KL annealing (Fu et al. 2019): the run is cut into this many cycles, and in each
    the KL weight ramps 0 -> beta over the first half, then stays at beta. 0 (default) keeps the
    linear warm-up of `kl_warmup_epochs`; otherwise it replaces it."""
    free_bits: float = 0.0
    """Free bits (Kingma et al. 2016): each latent dimension's batch-mean KL counts at least this
    many nats in the training loss, so the optimiser gains nothing by closing a dimension below
    it. 0 (default) turns it off; reported NELBOs are always the true ones."""
    fail_on_collapse: bool = False
    """Stop with an error (after writing the checkpoint) once the posterior has collapsed."""
    seed: int = 0
    val_fraction: float = 0.1
    limit: int | None = None
    """Use only the first N images of the dataset (quick runs)."""
    device: str = "cpu"
    num_threads: int | None = None
    """torch intra-op threads; None leaves torch's default."""

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise InputError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.lr_warmup_steps < 0:
            raise InputError(f"lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(
                f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if self.beta < 0:
            raise InputError(f"beta must be >= 0, got {self.beta}")
        if self.kl_warmup_epochs < 0:
            raise InputError(f"kl_warmup_epochs must be >= 0, got {self.kl_warmup_epochs}")
        if self.kl_cycles < 0:
            raise InputError(f"kl_cycles must be >= 0, got {self.kl_cycles}")
        if self.free_bits < 0:
            raise InputError(f"free_bits must be >= 0, got {self.free_bits}")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"limit must be >= 1, got {self.limit}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        # Runs recorded before the warm-up existed trained without one: resume them so.
        return cls(**{"lr_warmup_steps": 0, **{k: v for k, v in data.items() if k in names}})
