"""Losses of the two training phases (SPEC 4), as ``nn.Module``s whose constructors hold every knob.

Phase 1: :class:`MSSSIMLoss`, ``1 - MS-SSIM`` over the whole canvas. Phase 2:
:class:`ROICompositeLoss`, ``w_g (1 - MS-SSIM) + w_1 L1_ROI + w_e Edge_ROI`` with weights from
gradient calibration (:mod:`bundle.model.calibration`), equal weights, or learned uncertainty weighting
(Kendall et al., CVPR 2018). Engine targets stack the image and the ROI mask on the channel axis.
Every loss exposes ``per_image(pred, target) -> (B,)`` so validation can report it as a metric.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from bundle.model.metrics import ms_ssim, roi_edge_error, roi_mae, roi_terms_view, split_target, split_views
from torch import nn

TERMS = ("global", "l1", "edge")
WEIGHTINGS = ("calibrated", "equal", "uncertainty")


def full_precision(forward: Callable) -> Callable:
    """Run a loss's ``forward(pred, target)`` in float32 with autocast off.

    Under mixed precision (``amp`` on GPU) the network's output may be bfloat16/float16; the SSIM
    sums, the Sobel normalisation and the ROI means are computed in float32 all the same.
    """

    @functools.wraps(forward)
    def wrapper(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(pred.device.type, enabled=False):
            return forward(self, pred.float(), target.float())

    return wrapper


class MSSSIMLoss(nn.Module):
    """Whole-canvas ``1 - MS-SSIM`` (data range 1; 5 scales at 256 px, 4 at 128 px).

    On a dual-view mosaic it is the mean over the two views (the 64 px zoom view gets 3 scales).

    Args:
        data_range: intensity range of the images.
    """

    def __init__(self, data_range: float = 1.0) -> None:
        super().__init__()
        self.data_range = data_range

    def per_image(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss per image (B,)."""
        preds, targets = split_views(pred), split_views(target)
        terms = [1.0 - ms_ssim(preds[v], split_target(targets[v])[0], self.data_range) for v in preds]
        return sum(terms) / len(terms)

    @full_precision
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batch."""
        return self.per_image(pred, target).mean()


def roi_view_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prediction, image, mask) of the view the ROI terms act on (the zoom view of a mosaic)."""
    view = roi_terms_view(pred)
    image, mask = split_target(split_views(target)[view])
    return split_views(pred)[view], image, mask


class ROIL1Loss(nn.Module):
    """Mean absolute error inside the ROI mask (of the zoom view for the dual-view model)."""

    def per_image(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss per image (B,)."""
        return roi_mae(*roi_view_pair(pred, target))

    @full_precision
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batch."""
        return self.per_image(pred, target).mean()


class ROIEdgeLoss(nn.Module):
    """Normalised-Sobel edge error inside the ROI (the ROI Edge-MAE metric as a loss).

    Args:
        eps: added to the per-image normaliser ``max_ROI G(x)``.
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def per_image(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss per image (B,)."""
        return roi_edge_error(*roi_view_pair(pred, target), self.eps)

    @full_precision
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batch."""
        return self.per_image(pred, target).mean()


class ROICompositeLoss(nn.Module):
    """Phase-2 loss ``w_g (1 - MS-SSIM) + w_1 L1_ROI + w_e Edge_ROI``.

    The weights are a buffer, so they travel in checkpoints. With ``weighting="calibrated"`` they
    start at 1 and are set once by gradient calibration (``is_calibrated`` records that); with
    ``"equal"`` they stay at 1; with ``"uncertainty"`` each term k gets a learned log-variance
    ``s_k`` and contributes ``exp(-s_k) L_k + s_k`` (add this module's parameters to the optimiser).

    Args:
        weighting: ``calibrated``, ``equal`` or ``uncertainty``.
        weights: initial weights (global, l1, edge).
        data_range: intensity range.
        edge_eps: normaliser epsilon of the edge term.

    Example::

        loss = ROICompositeLoss("calibrated")
        loss.set_weights({"global": 1.1, "l1": 1.1, "edge": 0.8})
        value = loss(pred, torch.cat([image, roi_mask], 1))
    """

    def __init__(
        self,
        weighting: str = "calibrated",
        weights: Sequence[float] = (1.0, 1.0, 1.0),
        data_range: float = 1.0,
        edge_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose from {WEIGHTINGS}")
        self.weighting = weighting
        self.terms = nn.ModuleDict({"global": MSSSIMLoss(data_range), "l1": ROIL1Loss(), "edge": ROIEdgeLoss(edge_eps)})
        self.register_buffer("weights", torch.tensor(list(weights), dtype=torch.float32))
        self.register_buffer("calibrated", torch.tensor(False))
        if weighting == "uncertainty":
            self.log_variances = nn.Parameter(torch.zeros(len(TERMS)))

    @property
    def is_calibrated(self) -> bool:
        """Whether gradient calibration has set the weights (restored from checkpoints too)."""
        return bool(self.calibrated)

    def set_weights(self, weights: dict[str, float]) -> None:
        """Fix the term weights, e.g. from :func:`bundle.model.calibration.calibrate_loss_weights`."""
        self.weights.copy_(torch.tensor([float(weights[t]) for t in TERMS]))
        self.calibrated.fill_(True)

    def weight_dict(self) -> dict[str, float]:
        """Current effective weights by term name (``exp(-s_k)`` under uncertainty weighting)."""
        if self.weighting == "uncertainty":
            return {t: float(w) for t, w in zip(TERMS, torch.exp(-self.log_variances.detach()), strict=True)}
        return {t: float(w) for t, w in zip(TERMS, self.weights, strict=True)}

    def term_values(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each term per image, ``{name: (B,)}``."""
        return {name: term.per_image(pred, target) for name, term in self.terms.items()}

    def per_image(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Weighted loss per image (B,)."""
        values = self.term_values(pred, target)
        if self.weighting == "uncertainty":
            s = self.log_variances
            return sum(torch.exp(-s[i]) * values[t] + s[i] for i, t in enumerate(TERMS))
        return sum(self.weights[i] * values[t] for i, t in enumerate(TERMS))

    @full_precision
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean weighted loss over the batch."""
        return self.per_image(pred, target).mean()
