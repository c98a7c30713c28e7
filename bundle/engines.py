"""Glue between the data items and MONAI's engines."""

from __future__ import annotations

import torch


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


class ROIBatch:
    """``prepare_batch`` for MONAI engines: the network gets the image, the loss image + ROI mask.

    The target stacks the image and the ROI mask on the channel axis (``cat([image, roi_mask], 1)``).

    Args:
        image_key: item key of the letterboxed image.
        mask_key: item key of the ROI mask.
        channels_last: hand the network its input in ``channels_last`` memory format (pair it with a
            network moved by :func:`bundle.datasets.to_memory_format`).
    """

    def __init__(self, image_key: str = "image", mask_key: str = "roi_mask", channels_last: bool = False) -> None:
        self.image_key = image_key
        self.mask_key = mask_key
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(
        self, batchdata: dict, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(inputs, targets)`` on ``device`` as plain tensors (no metadata overhead)."""
        image = plain_tensor(batchdata[self.image_key], device, non_blocking=non_blocking, **kwargs)
        mask = plain_tensor(batchdata[self.mask_key], device, non_blocking=non_blocking, **kwargs)
        return image.contiguous(memory_format=self.memory_format), torch.cat([image, mask], dim=1)
