"""Loss math checked against independent computations: direct formulas, Monte Carlo and, for a
1-D latent, the exact marginal likelihood by numerical integration."""

from __future__ import annotations

import math

import torch

from vaeserve.training.config import ModelConfig
from vaeserve.training.loss import (
    bernoulli_nll,
    diag_gaussian_log_prob,
    gaussian_kl,
    gaussian_nll,
    iwae_bound,
    optimal_log_scale,
    squared_error_per_channel,
)
from vaeserve.training.model import VAE


def test_bernoulli_nll_matches_the_direct_formula():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 1, 4, 3, generator=gen) * 4
    target = torch.rand(5, 1, 4, 3, generator=gen)
    p = torch.sigmoid(logits).double()
    direct = -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_nll(logits, target).double(), direct, rtol=1e-5, atol=1e-4)
    # saturated logits stay finite (the log-sum-exp form never takes log(0))
    extreme = bernoulli_nll(torch.full((1, 1, 2, 2), 200.0), torch.zeros(1, 1, 2, 2))
    assert torch.isfinite(extreme).all() and float(extreme) == 800.0


def test_closed_form_kl_matches_monte_carlo():
    gen = torch.Generator().manual_seed(1)
    mu = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    log_var = torch.tensor([[0.3, -1.2, 0.8]], dtype=torch.float64)
    z = mu + torch.exp(0.5 * log_var) * torch.randn(400_000, 3, generator=gen, dtype=torch.float64)
    log_q = diag_gaussian_log_prob(z, mu, log_var)
    log_p = diag_gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
    mc = float((log_q - log_p).mean())
    exact = float(gaussian_kl(mu, log_var))
    assert abs(mc - exact) < 0.02, (mc, exact)
    assert float(gaussian_kl(torch.zeros(1, 4), torch.zeros(1, 4))) == 0.0


def test_gaussian_log_prob_matches_torch_distributions():
    z, mu, log_var = torch.randn(6, 3), torch.randn(6, 3), torch.randn(6, 3)
    ref = torch.distributions.Normal(mu, torch.exp(0.5 * log_var)).log_prob(z).sum(-1)
    torch.testing.assert_close(diag_gaussian_log_prob(z, mu, log_var), ref)


def test_iwae_tightens_towards_the_exact_log_likelihood():
    torch.manual_seed(3)
    model = VAE(ModelConfig(height=2, width=2, latent_dim=1)).double().eval()
    x = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]], dtype=torch.float64)
    # exact log p(x) = log ∫ p(x|z) N(z; 0, 1) dz, by quadrature on a fine grid
    grid = torch.linspace(-10, 10, 40_001, dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        log_px_z = -bernoulli_nll(model.decoder.logits(grid), x.expand(len(grid), 1, 2, 2))
    log_pz = -0.5 * (grid[:, 0] ** 2 + math.log(2 * math.pi))
    dz = float(grid[1] - grid[0])
    exact = float(torch.logsumexp(log_px_z + log_pz, 0)) + math.log(dz)

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z_mean, z_log_var = model.encode(x)
        eps = torch.randn(20_000, 1, generator=gen, dtype=torch.float64)
        z = model.reparameterize(z_mean, z_log_var, eps)
        elbo = float(
            (-bernoulli_nll(model.decoder.logits(z), x.expand(20_000, 1, 2, 2))).mean()
            - gaussian_kl(z_mean, z_log_var)
        )
    iw1 = float(torch.stack([iwae_bound(model, x, 1, gen) for _ in range(2000)]).mean())
    iw_big = float(iwae_bound(model, x, 20_000, gen))
    assert elbo <= exact + 1e-3
    assert abs(iw1 - elbo) < 0.1  # K=1 is the ELBO
    assert elbo - 1e-3 <= iw_big <= exact + 0.01  # one draw of a bound that holds in expectation
    assert abs(iw_big - exact) < 0.05, (iw_big, exact)


def test_gaussian_nll_matches_torch_distributions():
    torch.manual_seed(0)
    mean, target = torch.rand(4, 3, 5, 6), torch.rand(4, 3, 5, 6)
    log_scale = torch.tensor([-2.0, -1.0, 0.5])
    normal = torch.distributions.Normal(mean, log_scale.exp().view(1, 3, 1, 1))
    direct = -normal.log_prob(target).flatten(1).sum(dim=1)
    torch.testing.assert_close(gaussian_nll(mean, log_scale, target), direct)


def test_the_optimal_scale_is_the_likelihoods_optimum_per_channel():
    torch.manual_seed(1)
    mean = torch.rand(8, 3, 4, 4)
    target = mean + torch.randn(8, 3, 4, 4) * torch.tensor([0.05, 0.1, 0.3]).view(1, 3, 1, 1)
    best = optimal_log_scale(squared_error_per_channel(mean, target), 8 * 4 * 4)
    nll = gaussian_nll(mean, best, target).sum()
    for channel in range(3):
        for step in (-0.05, 0.05):
            moved = best.clone()
            moved[channel] += step
            assert float(gaussian_nll(mean, moved, target).sum()) > float(nll)
    torch.testing.assert_close(best.exp(), torch.tensor([0.05, 0.1, 0.3]), rtol=0.2, atol=0)
