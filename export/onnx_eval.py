"""Run exported graphs with ONNX Runtime and numpy alone: parity checks and the ELBO from ONNX.

No torch here, so a model can be checked where only the `serve` extra is installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vaeserve.imaging import to_float

# float32 sigmoid outputs reach exactly 0 or 1 for large logits; clipping bounds the per-pixel
# loss at -log(1e-7) ~ 16 nats instead of infinity (torch computes from logits and never clips).
_PROB_EPS = 1e-7


def cpu_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """A deterministic CPU session for checks (the service builds its own, tuned sessions)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_batched(
    session: ort.InferenceSession, array: np.ndarray, batch: int = 1024
) -> list[np.ndarray]:
    """All outputs of `session` for `array`, fed in chunks of `batch` rows."""
    name = session.get_inputs()[0].name
    chunks = [session.run(None, {name: array[i : i + batch]}) for i in range(0, len(array), batch)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def onnx_elbo(
    encoder: ort.InferenceSession,
    decoder: ort.InferenceSession,
    images: np.ndarray,
    seed: int = 0,
    scale: Sequence[float] | None = None,
) -> dict[str, float]:
    """Mean NELBO, reconstruction NLL and KL per image (nats) from the two graphs.

    `images` are uint8 N x C x H x W. One posterior sample per image, drawn with numpy from `seed`.
    Bernoulli pixels, or with `scale` (sigma per channel) a Gaussian around the decoded image.
    """
    x = to_float(images)
    z_mean, z_log_var = run_batched(encoder, x)
    eps = np.random.default_rng(seed).standard_normal(z_mean.shape).astype(np.float32)
    z = z_mean + np.exp(0.5 * z_log_var) * eps
    (probs,) = run_batched(decoder, z)
    xd = x.astype(np.float64)
    if scale is not None:
        sigma = np.asarray(scale, np.float64).reshape(1, -1, 1, 1)
        per_pixel = 0.5 * ((xd - probs) / sigma) ** 2 + np.log(sigma) + 0.5 * np.log(2 * np.pi)
        recon = per_pixel.reshape(len(x), -1).sum(axis=1)
    else:
        p = np.clip(probs.astype(np.float64), _PROB_EPS, 1.0 - _PROB_EPS)
        recon = -(xd * np.log(p) + (1.0 - xd) * np.log1p(-p)).reshape(len(x), -1).sum(axis=1)
    mu, lv = z_mean.astype(np.float64), z_log_var.astype(np.float64)
    kl = 0.5 * (mu**2 + np.exp(lv) - 1.0 - lv).sum(axis=1)
    return {
        "nelbo": float((recon + kl).mean()),
        "recon": float(recon.mean()),
        "kl": float(kl.mean()),
        "images": len(x),
    }
