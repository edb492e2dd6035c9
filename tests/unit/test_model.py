"""The network: the book's parameter counts, shapes for other settings, and the sampling scale."""

from __future__ import annotations

import pytest
import torch

from vaeserve.training.config import ModelConfig
from vaeserve.training.model import VAE, count_parameters


def test_default_parameter_counts_match_the_book():
    model = VAE(ModelConfig())
    assert count_parameters(model.encoder) == 494_244
    assert count_parameters(model.decoder) == 56_385


@pytest.mark.parametrize(
    ("height", "width", "channels", "latent"),
    [(28, 28, 1, 2), (32, 32, 3, 16), (27, 33, 1, 5), (7, 9, 3, 1), (2, 2, 1, 3)],
)
def test_shapes(height, width, channels, latent):
    model = VAE(ModelConfig(height=height, width=width, channels=channels, latent_dim=latent))
    x = torch.rand(3, channels, height, width)
    z_mean, z_log_var = model.encode(x)
    assert z_mean.shape == z_log_var.shape == (3, latent)
    images = model.decode(z_mean)
    assert images.shape == (3, channels, height, width)
    assert float(images.detach().min()) >= 0.0 and float(images.detach().max()) <= 1.0
    logits, mu, _ = model(x)
    assert logits.shape == x.shape and mu.shape == (3, latent)


def test_reparameterize_scales_by_the_standard_deviation_not_the_variance():
    mu = torch.tensor([[1.0, -2.0]])
    log_var = torch.log(torch.tensor([[4.0, 0.25]]))  # std 2 and 0.5
    eps = torch.tensor([[1.5, -3.0]])
    z = VAE.reparameterize(mu, log_var, eps)
    torch.testing.assert_close(z, torch.tensor([[1.0 + 2.0 * 1.5, -2.0 + 0.5 * -3.0]]))


def test_encode_and_decode_are_deterministic():
    model = VAE(ModelConfig(height=8, width=8)).eval()
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(model.encode(x), model.encode(x), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [{"channels": 2}, {"height": 1}, {"latent_dim": 0}])
def test_bad_settings_rejected(bad):
    with pytest.raises(ValueError):
        ModelConfig(**bad)
