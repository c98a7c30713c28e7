"""Inference engine glue: collation, ``prepare_batch``, the inferer that also returns the latent, per-image metrics."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from bundle.model.batches import pack_views, plain_tensor
from bundle.model.metrics import ROI_METRICS, view_metrics
from monai.inferers import Inferer
from torch import nn

ZOOM_ROI_METRICS = ("roi_mae", "roi_edge_mae", "roi_blur_px")


def collate_items(items: Sequence[dict]) -> dict:
    """Stack ``image`` (and ``roi_view``) ; keep every other field as a per-item list (boxes may be None)."""
    batch: dict = {key: [item.get(key) for item in items] for key in items[0]}
    for key in ("image", "roi_view"):
        if key in batch:
            batch[key] = torch.stack([plain_tensor(item[key]).float() for item in items])
    return batch


class InferenceBatch:
    """``prepare_batch`` for inference: the network input (canvas, or view mosaic with ``dual_view``) and no target.

    Args:
        dual_view: pack ``roi_view`` beside the canvas (:class:`~bundle.model.views.ViewLayout`).
    """

    def __init__(self, dual_view: bool = False) -> None:
        self.dual_view = dual_view

    def __call__(self, batchdata: dict, device=None, non_blocking: bool = False, **kwargs) -> tuple[torch.Tensor, None]:
        """Return ``(inputs, None)`` on ``device``."""
        return pack_views(batchdata, "image", "roi_view", self.dual_view, device, non_blocking=non_blocking), None


def prepare_image(batchdata: dict, device=None, non_blocking: bool = False, **kwargs) -> tuple[torch.Tensor, None]:
    """``prepare_batch`` of the single-view model: the images on ``device`` and no target."""
    return InferenceBatch(False)(batchdata, device, non_blocking)


class LatentInferer(Inferer):
    """Run an autoencoder once and return ``{"pred": reconstruction, "latent": z}``."""

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Encode and decode ``inputs`` with ``network`` (``encode``/``decode``; DDP-wrapped is fine)."""
        module = network.module if hasattr(network, "module") else network
        z = module.encode(inputs)
        return {"pred": module.decode(z), "latent": z}


def batch_metrics(views: dict[str, torch.Tensor], batch: dict) -> list[dict[str, float]]:
    """Whole-canvas PSNR/SSIM/MS-SSIM per image, and ROI metrics for images with a box, in one batched pass.

    Args:
        views: the batch's reconstructions by view (:func:`~bundle.model.metrics.split_views`): ``global``
            (B, 1, S, S) and, for the dual-view model, ``roi`` (B, 1, R, R).
        batch: the collated batch: ``image`` (letterboxed inputs), ``roi`` (per image the NT box in
            canvas pixels or None) and, with a ``roi`` view, ``roi_view`` / ``roi_view_mask``.

    Returns:
        one dict of metric values per image (ROI metrics only for images with a box; ``zoom_roi_mae``,
        ``zoom_roi_edge_mae`` and ``zoom_roi_blur_px`` on the zoom view of the dual-view model).
    """
    from bundle.data.transforms import roi_mask

    p, y = views["global"].float(), torch.as_tensor(batch["image"]).float()
    rois = batch["roi"]
    height, width = y.shape[-2:]
    whole = view_metrics(p, y)
    rows = [{name: float(v[i]) for name, v in whole.items()} for i in range(len(y))]
    boxed = [i for i, roi in enumerate(rois) if roi is not None]
    if boxed:  # roi_mask is never empty: a box off the canvas marks the nearest pixel
        masks = torch.stack([roi_mask([float(v) for v in rois[i]], height, width) for i in boxed]).float()
        in_box = view_metrics(p[boxed], y[boxed], masks, ROI_METRICS)
        if "roi" in views:
            zoom_masks = torch.stack([plain_tensor(batch["roi_view_mask"][i]).float() for i in boxed])
            p_zoom, y_zoom = views["roi"][boxed].float(), torch.as_tensor(batch["roi_view"])[boxed].float()
            in_box.update(view_metrics(p_zoom, y_zoom, zoom_masks, ZOOM_ROI_METRICS, prefix="zoom_"))
        for j, i in enumerate(boxed):
            rows[i].update({name: float(v[j]) for name, v in in_box.items()})
    return rows
