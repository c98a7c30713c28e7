"""Glue between the data items and MONAI's engines."""

from __future__ import annotations

import torch
from bundle.model.views import ViewLayout


def plain_tensor(value: object, device: str | torch.device | None = None, **kwargs) -> torch.Tensor:
    """``value`` as a plain ``torch.Tensor`` (a ``MetaTensor`` loses its metadata) on ``device``.

    Args:
        value: tensor, ``MetaTensor``, array or number.
        device: target device (None keeps it).
        kwargs: passed to ``Tensor.to`` (e.g. ``non_blocking``).

    Returns:
        the tensor.
    """
    tensor = torch.as_tensor(value)
    tensor = tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor
    return tensor.to(device=device, **kwargs)


def pack_views(
    batch: dict, key: str, view_key: str, dual_view: bool, device: str | torch.device | None = None, **kwargs
) -> torch.Tensor:
    """The canvas ``batch[key]``, or with ``dual_view`` the view mosaic of it and ``batch[view_key]``.

    Args:
        batch: a collated batch.
        key: key of the (B, C, S, S) canvas tensor.
        view_key: key of the (B, C, R, R) ROI-zoom view tensor (read only with ``dual_view``).
        dual_view: pack the zoom view beside the canvas (:class:`~bundle.model.views.ViewLayout`).
        device: target device (None keeps it).
        kwargs: passed to ``Tensor.to`` (e.g. ``non_blocking``).

    Returns:
        a plain float tensor.
    """
    canvas = plain_tensor(batch[key], device, **kwargs).float()
    if not dual_view:
        return canvas
    view = plain_tensor(batch[view_key], device, **kwargs).float()
    return ViewLayout(canvas.shape[-1], view.shape[-1]).pack(canvas, view)


class ROIBatch:
    """``prepare_batch`` for MONAI engines: the network gets the image, the loss image + ROI mask.

    The target stacks the image and the ROI mask on the channel axis (``cat([image, roi_mask], 1)``).
    With ``dual_view`` both are view mosaics (:class:`~bundle.model.views.ViewLayout`): the canvas beside
    the ROI-zoom view, and the canvas ROI mask beside the NT-box mask of the zoom view.

    Args:
        image_key: item key of the letterboxed image.
        mask_key: item key of the ROI mask.
        channels_last: hand the network its input in ``channels_last`` memory format (pair it with a
            network moved by :func:`bundle.data.datasets.to_memory_format`).
        dual_view: pack the zoom view (``view_key``, ``view_mask_key``) beside the canvas.
        view_key: item key of the ROI-zoom view.
        view_mask_key: item key of the NT-box mask on the zoom view.
    """

    def __init__(
        self,
        image_key: str = "image",
        mask_key: str = "roi_mask",
        channels_last: bool = False,
        dual_view: bool = False,
        view_key: str = "roi_view",
        view_mask_key: str = "roi_view_mask",
    ) -> None:
        self.image_key = image_key
        self.mask_key = mask_key
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.dual_view = dual_view
        self.view_key = view_key
        self.view_mask_key = view_mask_key

    def __call__(
        self, batchdata: dict, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(inputs, targets)`` on ``device`` as plain tensors (no metadata overhead)."""
        pair = {"dual_view": self.dual_view, "device": device, "non_blocking": non_blocking, **kwargs}
        image = pack_views(batchdata, self.image_key, self.view_key, **pair)
        mask = pack_views(batchdata, self.mask_key, self.view_mask_key, **pair)
        return image.contiguous(memory_format=self.memory_format), torch.cat([image, mask], dim=1)


def network_input(network: torch.nn.Module, batch: dict, device: str | torch.device | None = None) -> torch.Tensor:
    """What ``network`` reads for a collated batch: the canvas, or the view mosaic of a dual-view model."""
    return pack_views(batch, "image", "roi_view", ViewLayout.of(network).dual_view, device)


def network_target(network: torch.nn.Module, batch: dict, device: str | torch.device | None = None) -> torch.Tensor:
    """The engine target for ``network``: image and ROI mask (as mosaics for a dual-view model) on the channel axis."""
    image = network_input(network, batch, device)
    mask = pack_views(batch, "roi_mask", "roi_view_mask", ViewLayout.of(network).dual_view, device)
    return torch.cat([image, mask], dim=1)
