"""The negative ELBO and the importance-weighted bound, per image, in nats."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vaeserve.training.model import VAE

LOG_2PI = math.log(2.0 * math.pi)


def bernoulli_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-log p(x | z) under independent Bernoulli pixels, summed over pixels: one value per image.

    Computed from logits (log-sum-exp form) so saturated sigmoids never give log(0).
    """
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return per_pixel.flatten(1).sum(dim=1)


MIN_LOG_SCALE = -6.0  # sigma >= 0.0025: well under one 8-bit step, and the NLL stays finite


def gaussian_nll(mean: torch.Tensor, log_scale: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-log N(x; mean, sigma^2) per pixel, summed over pixels: one value per image. `log_scale`
    holds log sigma per channel (C,), floored at MIN_LOG_SCALE. A density on [0, 1]-scaled
    pixels, so it can be negative; compare runs of one likelihood only."""
    log_sigma = log_scale.clamp(min=MIN_LOG_SCALE).view(1, -1, *([1] * (target.dim() - 2)))
    per_pixel = 0.5 * ((target - mean) * torch.exp(-log_sigma)).pow(2) + log_sigma + 0.5 * LOG_2PI
    return per_pixel.flatten(1).sum(dim=1)


def squared_error_per_channel(mean: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the batch and pixels of (x - mean)^2 for each channel: (C,), detached."""
    return (target - mean).detach().pow(2).transpose(0, 1).flatten(1).sum(dim=1)


def optimal_log_scale(squared_error: torch.Tensor, count: int) -> torch.Tensor:
    """log sigma per channel that maximises a Gaussian likelihood with these errors: sigma is
    their root mean square (Rybkin et al. 2021). A learned sigma starts at 1 and shrinks by
    about lr per step, and while it is large the KL term wins and the posterior collapses (a
    64x64 RGB run lost all its active units in 2 epochs); the optimum is right from the start."""
    floor = math.exp(2 * MIN_LOG_SCALE)
    return 0.5 * torch.log((squared_error / max(count, 1)).clamp(min=floor))


def reconstruction_nll(
    model: VAE,
    logits: torch.Tensor,
    target: torch.Tensor,
    log_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """-log p(x | z) per image under the model's likelihood (ModelConfig.likelihood); a
    Gaussian's log sigma is `log_scale` when given, else the model's (evaluation)."""
    if model.config.likelihood == "gaussian":
        scale = model.log_scale if log_scale is None else log_scale
        return gaussian_nll(torch.sigmoid(logits), scale, target)
    return bernoulli_nll(logits, target)


def gaussian_kl(z_mean: torch.Tensor, z_log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(log_var))) || N(0, I)) in closed form: one value per image."""
    return 0.5 * (z_mean.pow(2) + z_log_var.exp() - 1.0 - z_log_var).sum(dim=1)


def gaussian_kl_per_dim(z_mean: torch.Tensor, z_log_var: torch.Tensor) -> torch.Tensor:
    """The KL of `gaussian_kl` before the sum over latent dimensions: N x L."""
    return 0.5 * (z_mean.pow(2) + z_log_var.exp() - 1.0 - z_log_var)


def free_bits_kl(z_mean: torch.Tensor, z_log_var: torch.Tensor, floor: float) -> torch.Tensor:
    """sum_d max(floor, mean over the batch of KL_d) (Kingma et al. 2016): a scalar for the
    training loss only. Below the floor a dimension's KL has no gradient, so the optimiser gains
    nothing by switching it off; not a bound, so never reported as the ELBO."""
    per_dim = gaussian_kl_per_dim(z_mean, z_log_var).mean(dim=0)
    return torch.clamp(per_dim, min=floor).sum()


def diag_gaussian_log_prob(
    z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor
) -> torch.Tensor:
    """log N(z; mean, diag(exp(log_var))), summed over the last dimension."""
    return -0.5 * (LOG_2PI + log_var + (z - mean).pow(2) / log_var.exp()).sum(dim=-1)


def elbo_terms(
    model: VAE, images: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction NLL, KL) per image for one posterior sample each."""
    logits, z_mean, z_log_var = model(images, generator)
    return reconstruction_nll(model, logits, images), gaussian_kl(z_mean, z_log_var)


@torch.no_grad()
def iwae_bound(
    model: VAE, images: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """log p(x) >= log (1/K) sum_k p(x, z_k) / q(z_k | x), z_k ~ q(z | x)  (Burda et al. 2016).

    Returns the bound per image; it tightens towards log p(x) as K grows (K=1 is the ELBO).
    """
    if k < 1:
        raise ValueError(f"iw-samples must be >= 1, got {k}")
    z_mean, z_log_var = model.encode(images)
    n, dim = z_mean.shape
    where = images.device if generator is None else generator.device
    eps = torch.randn((k, n, dim), generator=generator, device=where).to(images.device)
    z = model.reparameterize(z_mean, z_log_var, eps)  # k x n x L
    logits = model.decoder.logits(z.reshape(k * n, dim))
    target = images.unsqueeze(0).expand(k, *images.shape).reshape(k * n, *images.shape[1:])
    log_px_z = -reconstruction_nll(model, logits, target).reshape(k, n)
    log_pz = diag_gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
    log_qz = diag_gaussian_log_prob(z, z_mean, z_log_var)
    return torch.logsumexp(log_px_z + log_pz - log_qz, dim=0) - math.log(k)
