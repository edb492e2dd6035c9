"""Posterior collapse, measured and flagged: active units, KL per latent dimension, and the rule
"no active unit for 2 epochs in a row".

A collapsed VAE's encoder output no longer depends on the image (q(z|x) = the prior), so the
decoder ignores z and every sample is the same blur; the loss alone does not show it. numpy only,
so export can judge a checkpoint's history without recomputing anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vaeserve.errors import UserError

ACTIVE_THRESHOLD = 0.01
"""Burda et al. 2016: dimension d is active when Var_x(E_q[z_d | x]) exceeds this."""
PATIENCE = 2
"""Epochs in a row with no active unit before the run is called collapsed."""

ADVICE = (
    "try another --seed, --free-bits 0.1 (nats per dimension), --kl-cycles 4, or a lower --beta"
)
MEANING = (
    "posterior collapse: no latent dimension is active, so the decoder ignores the encoder "
    "and every sample is the same blur"
)


class PosteriorCollapse(UserError, RuntimeError):
    """Training stopped (`--fail-on-collapse`) because the posterior collapsed."""


def active_units(z_mean: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> int:
    """How many latent dimensions' posterior means vary over the data (N x L in)."""
    z_mean = np.asarray(z_mean, dtype=np.float64)
    if len(z_mean) < 2:
        return 0
    return int((z_mean.var(axis=0) > threshold).sum())


def kl_per_dim(z_mean: np.ndarray, z_log_var: np.ndarray) -> list[float]:
    """Mean over the data of KL(q(z_d|x) || N(0, 1)) for each dimension d, in nats."""
    mu = np.asarray(z_mean, dtype=np.float64)
    log_var = np.asarray(z_log_var, dtype=np.float64)
    kl = 0.5 * (mu**2 + np.exp(log_var) - 1.0 - log_var)
    return [float(v) for v in kl.mean(axis=0)]


@dataclass
class CollapseTracker:
    """Counts epochs in a row with no active unit; `collapsed_at` is the epoch it reached
    `patience` first (it stays set: a run that collapsed once is suspect)."""

    patience: int = PATIENCE
    streak: int = 0
    collapsed_at: int | None = None

    def update(self, epoch: int, active: int) -> bool:
        """Record one epoch; True exactly when this epoch makes the run collapsed."""
        self.streak = self.streak + 1 if active == 0 else 0
        if self.streak >= self.patience and self.collapsed_at is None:
            self.collapsed_at = epoch
            return True
        return False

    @classmethod
    def from_history(cls, history: Iterable[Mapping[str, Any]]) -> CollapseTracker:
        """The tracker's state after a run's history (rows without `active_units` reset the
        streak: older checkpoints did not measure it)."""
        tracker = cls()
        for row in history:
            active = row.get("active_units")
            if active is None:
                tracker.streak = 0
                continue
            tracker.update(int(row["epoch"]), int(active))
        return tracker


def collapse_verdict(
    history: list[Mapping[str, Any]], metrics: Mapping[str, Any] | None = None
) -> str | None:
    """Why a run counts as collapsed (for export), or None: metrics.json says so, the history
    has `patience` epochs in a row without an active unit, or the final epoch has none."""
    if metrics and metrics.get("collapsed"):
        return f"metrics.json records posterior collapse at epoch {metrics.get('collapsed_epoch')}"
    tracker = CollapseTracker.from_history(history)
    if tracker.collapsed_at is not None:
        return (
            f"no active latent unit for {tracker.patience} epochs in a row "
            f"(collapsed at epoch {tracker.collapsed_at})"
        )
    if history and history[-1].get("active_units") == 0:
        return f"the final epoch ({history[-1]['epoch']}) has no active latent unit"
    return None
