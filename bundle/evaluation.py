"""Evaluation beyond the per-image metrics (SPEC 5): ROI jitter robustness and NT measurement fidelity."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bundle.metrics import psnr, roi_edge_error, roi_mae, sobel_magnitude
from bundle.nt_measure import measure_nt_in_roi
from bundle.readers import read_image
from bundle.transforms import LetterboxGeometry, letterbox_image, roi_mask, unletterbox_image

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
        preds = network(images).float()
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


@torch.no_grad()
def measurement_fidelity(
    networks: dict[str, nn.Module], entries: list[dict], canvas_size: int, device: str | torch.device = "cpu"
) -> list[dict]:
    """NT measured on each original image and on each network's reconstruction mapped back to it.

    Every image is letterboxed to the canvas, reconstructed, and the reconstruction is mapped back
    to the original geometry through the letterbox inverse; :func:`bundle.nt_measure.measure_nt_in_roi`
    then measures both inside the original NT box.

    Args:
        networks: name -> autoencoder (e.g. phase 1 and phase 2).
        entries: validated datalist entries (absolute paths) with ``pixel_spacing_mm`` and, where
            known, ``meta.nt_mm``.
        canvas_size: the networks' canvas.
        device: where to run.

    Returns:
        one row per image: ``case_id``, ``site``, ``nt_true_mm`` (or None), ``nt_original_mm`` and
        ``nt_{name}_mm`` per network (None where no band was found).
    """
    rows = []
    for net in networks.values():
        net.eval()
    for entry in entries:
        spacing = entry.get("pixel_spacing_mm")
        if spacing is None:
            continue
        image = read_image(entry["image"]).array
        geometry = LetterboxGeometry.compute(image.shape[1], image.shape[0], canvas_size)
        canvas = letterbox_image(torch.from_numpy(image)[None], geometry)[None].to(device)
        original = measure_nt_in_roi(image, entry["roi"], spacing)
        row = {
            "case_id": entry["case_id"],
            "site": int(entry["site"]),
            "nt_true_mm": (entry.get("meta") or {}).get("nt_mm"),
            "nt_original_mm": original["nt_mm"] if original else None,
        }
        for name, net in networks.items():
            recon = unletterbox_image(net(canvas)[0].float().cpu(), geometry)[0].numpy()
            measured = measure_nt_in_roi(recon, entry["roi"], spacing)
            row[f"nt_{name}_mm"] = measured["nt_mm"] if measured else None
        rows.append(row)
    return rows


def fidelity_summary(rows: list[dict], names: list[str]) -> dict[str, dict[str, float]]:
    """Mean absolute errors (mm) of the measurements: vs ground truth, and reconstruction vs original.

    Returns:
        ``{source: {"mae_vs_truth_mm", "mae_vs_original_mm", "found_pct", "n"}}`` for ``original``
        and every network name (``mae_vs_original_mm`` only for networks).
    """
    summary = {}
    for source in ["original", *names]:
        key = f"nt_{source}_mm"
        found = [r for r in rows if r[key] is not None]
        truth = [abs(r[key] - r["nt_true_mm"]) for r in found if r["nt_true_mm"] is not None]
        entry = {
            "n": len(rows),
            "found_pct": 100.0 * len(found) / max(1, len(rows)),
            "mae_vs_truth_mm": float(np.mean(truth)) if truth else float("nan"),
        }
        if source != "original":
            paired = [abs(r[key] - r["nt_original_mm"]) for r in found if r["nt_original_mm"] is not None]
            entry["mae_vs_original_mm"] = float(np.mean(paired)) if paired else float("nan")
        summary[source] = entry
    return summary
