"""ROI-aware convolutional autoencoder (SPEC 3).

No skip connections: everything the decoder draws has to pass through the 128-D latent, so the
latent can be probed and exported on its own. ``forward`` returns only the reconstruction (one
tensor), which keeps MONAI's ``verify_net_in_out``, ``ckpt_export`` and MONAI Label working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from bundle.model.views import ViewLayout
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


def conv_stages(in_channels: int, widths: Sequence[int], norm: str, negative_slope: float = 0.2) -> nn.Sequential:
    """Encoder stages: [conv3x3 stride 2 -> norm -> LeakyReLU -> conv3x3 -> norm -> LeakyReLU] per width."""
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
    return nn.Sequential(*layers)


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
        self.features = conv_stages(in_channels, widths, norm, negative_slope)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(widths[-1], latent_dim)

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
    """Convolutional autoencoder with a global 128-D latent (SPEC 3): the paper's single-view model.

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
        self.roi_canvas_size = 0
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

    @property
    def layout(self) -> ViewLayout:
        """The single-view layout (the canvas alone)."""
        return ViewLayout(self.canvas_size)


class DualViewEncoder(nn.Module):
    """One latent from the letterbox canvas and the ROI-zoom view.

    Each view has its own conv stages and global average pooling; the pooled features are
    concatenated and a linear head gives ``z``. Two inputs, so the exported encoder takes both.

    Args:
        in_channels: image channels.
        widths: stage widths of the canvas branch.
        roi_widths: stage widths of the zoom-view branch.
        latent_dim: size of ``z``.
        norm: ``batch``, ``instance`` or ``group``.
        negative_slope: LeakyReLU slope.
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256, 256),
        roi_widths: Sequence[int] = (16, 32, 64, 128),
        latent_dim: int = 128,
        norm: str = "batch",
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.features = conv_stages(in_channels, widths, norm, negative_slope)
        self.roi_features = conv_stages(in_channels, roi_widths, norm, negative_slope)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(widths[-1] + roi_widths[-1], latent_dim)

    def forward(self, image: torch.Tensor, roi_view: torch.Tensor) -> torch.Tensor:
        """Latents (B, latent_dim) of canvases (B, C, S, S) and zoom views (B, C, R, R)."""
        pooled_global = torch.flatten(self.pool(self.features(image)), 1)
        pooled_roi = torch.flatten(self.pool(self.roi_features(roi_view)), 1)
        return self.head(torch.cat([pooled_global, pooled_roi], dim=1))


class DualViewCAE(nn.Module):
    """Dual-view ROI-aware CAE: one latent, a canvas decoder and a zoom-view decoder (the default model).

    Input and output are view mosaics (:class:`~bundle.model.views.ViewLayout`): the ``S x S`` canvas
    beside the ``R x R`` zoom view, shape (B, C, S, S + R), so every one-tensor interface (MONAI
    engines, ``verify_net_in_out``, ``ckpt_export``, MONAI Label) works unchanged.

    Args:
        canvas_size: letterbox side ``S`` (divisible by ``2 ** len(widths)``).
        roi_canvas_size: zoom-view side ``R <= S`` (divisible by ``2 ** len(roi_widths)``).
        in_channels: image channels.
        widths: canvas-branch widths.
        roi_widths: zoom-branch widths.
        latent_dim: latent size.
        norm: ``batch``, ``instance`` or ``group``.

    Example::

        net = DualViewCAE(canvas_size=128, roi_canvas_size=64, widths=(16, 32, 64, 128, 128))
        out = net(torch.rand(2, 1, 128, 192))  # (2, 1, 128, 192): canvas | zoom view
        z = net.encode(torch.rand(2, 1, 128, 192))  # (2, 128)
    """

    __jit_unused_properties__ = ["layout"]

    def __init__(
        self,
        canvas_size: int = 256,
        roi_canvas_size: int = 64,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256, 256),
        roi_widths: Sequence[int] = (16, 32, 64, 128),
        latent_dim: int = 128,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        ViewLayout(canvas_size, roi_canvas_size)  # validates R <= S
        self.canvas_size = int(canvas_size)
        self.roi_canvas_size = int(roi_canvas_size)
        self.encoder = DualViewEncoder(in_channels, widths, roi_widths, latent_dim, norm)
        self.decoder = CAEDecoder(in_channels, widths, latent_dim, canvas_size, norm)
        self.roi_decoder = CAEDecoder(in_channels, roi_widths, latent_dim, roi_canvas_size, norm)

    @property
    def layout(self) -> ViewLayout:
        """The dual-view mosaic layout."""
        return ViewLayout(self.canvas_size, self.roi_canvas_size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent codes (B, latent_dim) of view mosaics (B, C, S, S + R)."""
        s, r = self.canvas_size, self.roi_canvas_size
        return self.encoder(x[..., :s, :s], x[..., :r, s : s + r])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """View mosaics (B, C, S, S + R) from latent codes."""
        canvas = self.decoder(z)
        view = self.roi_decoder(z)
        below = view.new_zeros((view.shape[0], view.shape[1], self.canvas_size - self.roi_canvas_size, view.shape[3]))
        return torch.cat([canvas, torch.cat([view, below], dim=2)], dim=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of a view mosaic (one tensor)."""
        return self.decode(self.encode(x))


MODELS = ("dual_view", "paper")


def build_autoencoder(
    model: str = "dual_view",
    canvas_size: int = 256,
    roi_canvas_size: int = 64,
    widths: Sequence[int] = (32, 64, 128, 256, 256),
    roi_widths: Sequence[int] = (16, 32, 64, 128),
    latent_dim: int = 128,
    norm: str = "batch",
    in_channels: int = 1,
) -> nn.Module:
    """The configured autoencoder: ``dual_view`` (:class:`DualViewCAE`) or ``paper`` (:class:`ROIAwareCAE`).

    Raises:
        ValueError: for an unknown model name.
    """
    if model == "dual_view":
        return DualViewCAE(canvas_size, roi_canvas_size, in_channels, widths, roi_widths, latent_dim, norm)
    if model == "paper":
        return ROIAwareCAE(canvas_size, in_channels, widths, latent_dim, norm)
    raise ValueError(f"model must be one of {MODELS}, got {model!r}")


def build_encoder(model: str = "dual_view", **settings: Any) -> nn.Module:
    """The encoder of :func:`build_autoencoder`'s model, on its own (for export).

    Args:
        model: ``dual_view`` or ``paper``.
        settings: further arguments of :func:`build_autoencoder` (``widths``, ``roi_widths``,
            ``latent_dim``, ``norm``, ``in_channels``); the canvas sizes do not change the encoder.

    Returns:
        the ``encoder`` of the built autoencoder (:class:`DualViewEncoder` or :class:`CAEEncoder`).

    Raises:
        ValueError: for an unknown model name.
    """
    return build_autoencoder(model, **settings).encoder
