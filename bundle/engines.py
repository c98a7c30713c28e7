"""Glue between the data items and MONAI's engines."""

from __future__ import annotations

import torch


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
        image = torch.as_tensor(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking, **kwargs)
        mask = torch.as_tensor(batchdata[self.mask_key]).to(device=device, non_blocking=non_blocking, **kwargs)
        image = image.as_tensor() if hasattr(image, "as_tensor") else image
        mask = mask.as_tensor() if hasattr(mask, "as_tensor") else mask
        return image.contiguous(memory_format=self.memory_format), torch.cat([image, mask], dim=1)
