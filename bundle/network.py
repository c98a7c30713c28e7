"""ROI-aware convolutional autoencoder (SPEC 3).

No skip connections: everything the decoder draws has to pass through the 128-D latent, so the
latent can be probed and exported on its own. ``forward`` returns only the reconstruction (one
tensor), which keeps MONAI's ``verify_net_in_out``, ``ckpt_export`` and MONAI Label working.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name: ``batch``, ``instance`` or ``group`` (8 groups or fewer)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"unknown norm {kind!r}; choose batch, instance or group")


class CAEEncoder(nn.Module):
    """Encoder: strided conv stages, global average pooling and a linear head to the latent.

    Args:
        in_channels: image channels.
        widths: channels of each stage; each stage halves the resolution.
        latent_dim: size of the latent vector ``z``.
        norm: ``batch``, ``instance`` or ``group``.
        negative_slope: LeakyReLU slope.
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256, 256),
        latent_dim: int = 128,
        norm: str = "batch",
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in widths:
            layers += [
                nn.Conv2d(previous, width, 3, stride=2, padding=1, bias=False),
                _norm(norm, width),
                nn.LeakyReLU(negative_slope, inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                _norm(norm, width),
                nn.LeakyReLU(negative_slope, inplace=True),
            ]
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(previous, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (B, C, S, S) to latents (B, latent_dim)."""
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


class CAEDecoder(nn.Module):
    """Decoder: linear projection to a coarse grid, then upsampling conv stages and a sigmoid.

    Args:
        out_channels: image channels.
        widths: encoder widths (the decoder mirrors them).
        latent_dim: size of the latent vector.
        canvas_size: output side ``S``; must be divisible by ``2 ** len(widths)``.
        norm: ``batch``, ``instance`` or ``group``.
        negative_slope: LeakyReLU slope.
    """

    def __init__(
        self,
        out_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256, 256),
        latent_dim: int = 128,
        canvas_size: int = 256,
        norm: str = "batch",
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        factor = 2 ** len(widths)
        if canvas_size % factor:
            raise ValueError(f"canvas_size {canvas_size} must be divisible by 2**len(widths) = {factor}")
        self.grid = canvas_size // factor
        self.channels = widths[-1]
        self.project = nn.Linear(latent_dim, self.channels * self.grid * self.grid)
        layers: list[nn.Module] = []
        previous = self.channels
        # Each stage outputs the width the encoder has at that resolution (the last stage, at full
        # resolution, keeps the first width), so decoding costs about what encoding does.
        for width in [*reversed(widths[:-1]), widths[0]]:
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(previous, width, 3, padding=1, bias=False),
                _norm(norm, width),
                nn.LeakyReLU(negative_slope, inplace=True),
            ]
            previous = width
        layers += [nn.Conv2d(previous, out_channels, 3, padding=1), nn.Sigmoid()]
        self.features = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map latents (B, latent_dim) to images (B, C, S, S) in [0, 1]."""
        return self.features(self.project(z).view(-1, self.channels, self.grid, self.grid))


class ROIAwareCAE(nn.Module):
    """Convolutional autoencoder with a global 128-D latent (SPEC 3).

    Args:
        canvas_size: input/output side ``S`` (divisible by ``2 ** len(widths)``).
        in_channels: image channels.
        widths: encoder stage widths (32, 64, 128, 256, 256 at S = 256; narrower for the quick preset).
        latent_dim: latent size.
        norm: ``batch``, ``instance`` or ``group``.

    Example::

        net = ROIAwareCAE(canvas_size=128, widths=(16, 32, 64, 128, 128))
        recon = net(torch.rand(2, 1, 128, 128))  # (2, 1, 128, 128)
        z = net.encode(torch.rand(2, 1, 128, 128))  # (2, 128)
    """

    def __init__(
        self,
        canvas_size: int = 256,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256, 256),
        latent_dim: int = 128,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.canvas_size = canvas_size
        self.encoder = CAEEncoder(in_channels, widths, latent_dim, norm)
        self.decoder = CAEDecoder(in_channels, widths, latent_dim, canvas_size, norm)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent codes (B, latent_dim) of images (B, C, S, S)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, C, S, S) from latent codes (B, latent_dim)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x`` (one tensor)."""
        return self.decoder(self.encoder(x))
