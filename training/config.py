"""Model and training settings: plain dataclasses, so a checkpoint stores them as a dict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from vaeserve.errors import InputError


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the VAE: everything needed to rebuild the network from a checkpoint."""

    height: int = 28
    """Image height in pixels."""
    width: int = 28
    """Image width in pixels."""
    channels: int = 1
    """1 (grey) or 3 (RGB)."""
    latent_dim: int = 2
    """Size of the latent vector z."""

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise InputError(f"channels must be 1 or 3, got {self.channels}")
        if self.height < 2 or self.width < 2:
            raise InputError(f"image size must be at least 2x2, got {self.height}x{self.width}")
        if self.latent_dim < 1:
            raise InputError(f"latent_dim must be >= 1, got {self.latent_dim}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W), the layout every tensor in the project uses."""
        return (self.channels, self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained; stored whole in the checkpoint and in metrics.json."""

    data: str
    """Path of the dataset file or folder."""
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
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
        return cls(**{k: v for k, v in data.items() if k in names})
