"""The convolutional VAE of Chollet, Deep Learning with Python, section 8.4, in PyTorch.

`encode` and `decode` are the two cut points that become the two ONNX graphs; `reparameterize`
stays outside both, so the graphs are deterministic and the caller owns the noise (and its seed).
"""

from __future__ import annotations

import torch
from torch import nn

from vaeserve.training.config import ModelConfig


class Encoder(nn.Module):
    """Image in [0, 1], N x C x H x W -> (z_mean, z_log_var), each N x L.

    Conv(stem) -> one stride-2 Conv per stage -> two Convs at the last stage's width -> Dense
    (hidden); with the defaults, exactly the book's layers (and parameter names)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        h, w = cfg.grids()[-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.channels, cfg.stem, 3, padding=1), nn.ReLU()]
        width = cfg.stem
        for out in cfg.stages:
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1), nn.ReLU()]
            width = out
        for _ in range(2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers += [nn.Flatten(), nn.Linear(width * h * w, cfg.hidden), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.z_mean = nn.Linear(cfg.hidden, cfg.latent_dim)
        self.z_log_var = nn.Linear(cfg.hidden, cfg.latent_dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(image)
        return self.z_mean(x), self.z_log_var(x)


class Decoder(nn.Module):
    """Latent N x L -> image logits N x C x H x W; `forward` applies the sigmoid.

    Dense -> the last stage's grid -> one stride-2 ConvTranspose per stage, back to the stem's
    width -> Conv to C channels."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        grids = cfg.grids()
        h, w = grids[-1]
        widths = [cfg.stem, *cfg.stages]  # widths[i]: channels on grids[i] (i >= 1: encoder's)
        layers: list[nn.Module] = [
            nn.Linear(cfg.latent_dim, widths[-1] * h * w),
            nn.ReLU(),
            nn.Unflatten(1, (widths[-1], h, w)),
        ]
        for i in range(len(cfg.stages), 0, -1):
            (fine_h, fine_w), (coarse_h, coarse_w) = grids[i - 1], grids[i]
            # output_padding lands the transposed convolution exactly on the finer grid.
            pad = (fine_h - (2 * coarse_h - 1), fine_w - (2 * coarse_w - 1))
            layers += [
                nn.ConvTranspose2d(
                    widths[i], widths[i - 1], 3, stride=2, padding=1, output_padding=pad
                ),
                nn.ReLU(),
            ]
        layers.append(nn.Conv2d(cfg.stem, cfg.channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid outputs: the loss works on these for numerical stability."""
        return self.net(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))


class VAE(nn.Module):
    """Encoder + decoder, with the reparameterization between them."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.likelihood == "gaussian":
            # log sigma of p(x | z) per channel for evaluation: set after each training epoch to
            # that epoch's optimum (training batches use their own, Rybkin et al. 2021's
            # "optimal sigma"). Not part of either graph: model.json records its value.
            self.register_buffer("log_scale", torch.zeros(cfg.channels))
        keras_init(self)

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(image)

    @staticmethod
    def reparameterize(
        z_mean: torch.Tensor, z_log_var: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        # The standard deviation is exp(0.5 * log-variance). The book's listing writes
        # `z_mean + K.exp(z_log_var) * epsilon`, which uses the variance as the scale: a known
        # mistake that trains, but not the model the loss describes.
        return z_mean + torch.exp(0.5 * z_log_var) * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(
        self, image: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (reconstruction logits, z_mean, z_log_var) for one sampled z per image."""
        z_mean, z_log_var = self.encode(image)
        # Drawn where the generator lives (a CPU generator on a CUDA model: the same noise as
        # on the CPU), then moved.
        where = z_mean.device if generator is None else generator.device
        eps = torch.randn(z_mean.shape, generator=generator, device=where).to(z_mean.device)
        z = self.reparameterize(z_mean, z_log_var, eps)
        return self.decoder.logits(z), z_mean, z_log_var


def keras_init(module: nn.Module) -> None:
    """Glorot-uniform kernels and zero biases, as the book's Keras layers start.

    With torch's defaults (Kaiming-uniform, a = sqrt(5), and random biases) the 32 ReLUs in
    front of z start with weights 2.4x smaller on their 12,544 inputs, and Adam's first steps
    (about lr per weight, whatever the gradient's size) switch them all off within ~50 steps on
    one seed in six: a dead bottleneck gives a constant posterior and no gradient back, so the
    encoder never recovers (posterior collapse). docs/training.md, "Why runs collapsed", has the
    measurements."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
