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


def test_layers_start_as_the_books_keras_layers_do():
    """Glorot-uniform kernels and zero biases (Keras's defaults), not torch's: with torch's the
    ReLU bottleneck in front of z died within ~50 Adam steps on one MNIST seed in six (posterior
    collapse; docs/training.md, "Why runs collapsed")."""
    torch.manual_seed(0)
    model = VAE(ModelConfig())
    layers = [
        m
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))
    ]
    assert len(layers) == 10
    for layer in layers:
        assert torch.count_nonzero(layer.bias) == 0
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound  # the whole Glorot range, not a smaller one
    bottleneck = model.encoder.features[-2]
    assert bottleneck.in_features == 64 * 14 * 14
    # torch's default bound for this layer, 1 / sqrt(fan_in), is 2.4x smaller than Glorot's
    assert bottleneck.weight.abs().max() > 2.0 / bottleneck.in_features**0.5
