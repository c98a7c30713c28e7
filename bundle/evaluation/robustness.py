"""Evaluation beyond the per-image metrics (SPEC 5): ROI jitter robustness.

NT measurement fidelity lives in :mod:`bundle.evaluation.fidelity`.
"""

from __future__ import annotations

import numpy as np
import torch
from bundle.data.transforms import roi_mask
from bundle.model.batches import network_input
from bundle.model.metrics import psnr, roi_edge_error, roi_mae, sobel_magnitude, split_views
from torch import nn

JITTER_SHIFTS_PX = (2, 4, 8)
JITTER_SCALES = (0.8, 1.2)
SHIFT_DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def perturb_box(box: list[float], shift: tuple[float, float] = (0.0, 0.0), scale: float = 1.0) -> list[float]:
    """Shift a box ``[x0, y0, x1, y1]`` by ``(dx, dy)`` pixels and scale it about its centre."""
    cx, cy = 0.5 * (box[0] + box[2]) + shift[0], 0.5 * (box[1] + box[3]) + shift[1]
    half_w, half_h = 0.5 * scale * (box[2] - box[0]), 0.5 * scale * (box[3] - box[1])
    return [cx - half_w, cy - half_h, cx + half_w, cy + half_h]


def jitter_perturbations() -> dict[str, list[tuple[tuple[float, float], float]]]:
    """Named perturbations: each a list of (shift, scale) averaged over (shifts in 4 directions)."""
    perturbations = {"exact": [((0.0, 0.0), 1.0)]}
    for k in JITTER_SHIFTS_PX:
        perturbations[f"shift {k} px"] = [((k * dx, k * dy), 1.0) for dx, dy in SHIFT_DIRECTIONS]
    for s in JITTER_SCALES:
        perturbations[f"scale {s:g}"] = [((0.0, 0.0), s)]
    return perturbations


@torch.no_grad()
def roi_jitter_metrics(
    network: nn.Module, data_loader, device: str | torch.device = "cpu", flat_edge: float = 0.05
) -> dict[str, dict[str, float]]:
    """ROI metrics of a network's reconstructions scored on perturbed NT boxes (canvas pixels).

    The reconstruction does not depend on the box; the perturbation moves the region that is
    scored, so the table shows how much a result depends on exact box placement. A box moved onto
    a flat area (the letterbox padding: strongest reference edge below ``flat_edge``) has no
    defined Edge-MAE (its normaliser is ~0); such boxes are left out of the Edge-MAE mean and
    counted in ``flat_boxes_pct``.

    Args:
        network: the autoencoder.
        data_loader: letterboxed items with ``image`` and ``roi`` (canvas pixels).
        device: where to run.
        flat_edge: boxes whose strongest reference Sobel magnitude is below this count as flat.

    Returns:
        ``{perturbation: {"roi_mae", "roi_psnr", "roi_edge_mae", "flat_boxes_pct"}}``, means over
        scored boxes.
    """
    network.eval()
    values: dict[str, dict[str, list[float]]] = {}
    for batch in data_loader:
        images = torch.as_tensor(batch["image"]).float().to(device)
        preds = split_views(network(network_input(network, batch, device)).float())["global"]
        edges = sobel_magnitude(images)
        height, width = images.shape[-2:]
        for name, variants in jitter_perturbations().items():
            collected = values.setdefault(name, {"roi_mae": [], "roi_psnr": [], "roi_edge_mae": [], "flat": []})
            for shift, scale in variants:
                boxes = [perturb_box([float(v) for v in box], shift, scale) for box in batch["roi"]]
                masks = torch.stack([roi_mask(b, height, width) for b in boxes]).to(device)
                flat = (edges * masks).flatten(1).amax(1) < flat_edge
                collected["roi_mae"] += roi_mae(preds, images, masks).tolist()
                collected["roi_psnr"] += psnr(preds, images, mask=masks).tolist()
                collected["roi_edge_mae"] += roi_edge_error(preds, images, masks)[~flat].tolist()
                collected["flat"] += flat.float().tolist()
    return {
        name: {
            "roi_mae": float(np.mean(v["roi_mae"])),
            "roi_psnr": float(np.mean(v["roi_psnr"])),
            "roi_edge_mae": float(np.mean(v["roi_edge_mae"])) if v["roi_edge_mae"] else float("nan"),
            "flat_boxes_pct": 100.0 * float(np.mean(v["flat"])),
        }
        for name, v in values.items()
    }
