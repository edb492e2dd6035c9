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


DEEP = [
    # (height, width, channels, stages, grid of the last stage)
    (64, 64, 3, (32, 64, 128), (8, 8)),
    (128, 128, 3, (32, 64, 128, 256), (8, 8)),
    (28, 28, 1, (16, 32, 64), (4, 4)),  # 7 -> 4: an odd step, output_padding 0 on the way back
    (30, 45, 3, (8, 8), (8, 12)),
]


@pytest.mark.parametrize(("height", "width", "channels", "stages", "last"), DEEP)
def test_deeper_networks_halve_per_stage_and_decode_to_the_image_size(
    height, width, channels, stages, last
):
    cfg = ModelConfig(height=height, width=width, channels=channels, stages=stages, hidden=64)
    assert cfg.grids()[-1] == last
    model = VAE(cfg)
    strided = [m for m in model.encoder.features if getattr(m, "stride", None) == (2, 2)]
    assert [m.out_channels for m in strided] == list(stages)
    ups = [m for m in model.decoder.net if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [m.out_channels for m in ups] == [*reversed(stages[:-1]), cfg.stem]
    x = torch.rand(2, channels, height, width)
    z_mean, _ = model.encode(x)
    assert model.decode(z_mean).shape == x.shape


def test_the_default_is_the_books_network_layer_for_layer():
    """Checkpoints and graphs of the bundled model rely on these names and shapes."""
    shapes = {k: tuple(v.shape) for k, v in VAE(ModelConfig()).state_dict().items()}
    assert shapes == {
        "encoder.features.0.weight": (32, 1, 3, 3),
        "encoder.features.0.bias": (32,),
        "encoder.features.2.weight": (64, 32, 3, 3),
        "encoder.features.2.bias": (64,),
        "encoder.features.4.weight": (64, 64, 3, 3),
        "encoder.features.4.bias": (64,),
        "encoder.features.6.weight": (64, 64, 3, 3),
        "encoder.features.6.bias": (64,),
        "encoder.features.9.weight": (32, 12544),
        "encoder.features.9.bias": (32,),
        "encoder.z_mean.weight": (2, 32),
        "encoder.z_mean.bias": (2,),
        "encoder.z_log_var.weight": (2, 32),
        "encoder.z_log_var.bias": (2,),
        "decoder.net.0.weight": (12544, 2),
        "decoder.net.0.bias": (12544,),
        "decoder.net.3.weight": (64, 32, 3, 3),
        "decoder.net.3.bias": (32,),
        "decoder.net.5.weight": (1, 32, 3, 3),
        "decoder.net.5.bias": (1,),
    }


def test_model_config_reads_old_checkpoints_and_round_trips():
    old = {"height": 28, "width": 28, "channels": 1, "latent_dim": 2}  # before depth existed
    assert ModelConfig.from_dict(old) == ModelConfig()
    deep = ModelConfig(height=64, width=64, channels=3, stages=[32, 64], likelihood="gaussian")
    assert deep.stages == (32, 64)  # lists (JSON, checkpoints) become tuples: hashable, frozen
    assert ModelConfig.from_dict(deep.to_dict()) == deep


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("stages", (), "1 to 6 stride-2 stages"),
        ("stages", (8,) * 7, "1 to 6 stride-2 stages"),
        ("stages", (64, 0), "stage channels must be in 1..1024"),
        ("hidden", 0, "hidden must be in 1..1024"),
        ("likelihood", "poisson", "likelihood must be one of bernoulli, gaussian"),
    ],
)
def test_model_config_refuses_bad_architectures(field, value, words):
    from vaeserve.errors import InputError

    with pytest.raises(InputError, match=words):
        ModelConfig(**{field: value})


def test_a_gaussian_model_carries_its_scale_as_a_buffer_not_a_parameter():
    model = VAE(ModelConfig(channels=3, likelihood="gaussian"))
    assert "log_scale" in model.state_dict() and model.log_scale.shape == (3,)
    assert all(name != "log_scale" for name, _ in model.named_parameters())
    assert count_parameters(model) == count_parameters(VAE(ModelConfig(channels=3)))
