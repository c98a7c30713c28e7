"""Train the NT localiser (:class:`bundle.model.localizer.NTLocalizer`) from the datalist's boxes.

The main job's step ``train_localizer`` (``configs/train.json``, key ``run_localizer``). Both stages
train from the native training images in memory (8-bit), with fresh random views each epoch:

- **coarse**: a random crop of the native frame (60-115 % of each side, the NT inside) letterboxed
  to the canvas, so box sizes, positions and aspect ratios vary (the held-out site's frame is
  16:9, the sources' 4:3); with probability ``negative_fraction`` a crop that holds no NT (heatmap
  all zero), which teaches the confidence what "no NT in view" looks like. CenterNet's focal loss on
  the heatmap, L1 on offset and log-size at the centre cell.
- **refine**: the zoom view around a jittered copy of the true box (centre shifted by up to about a
  third of the box, size scaled), target the true box in view fractions. L1 plus 1 - GIoU
  (:func:`monai.data.box_utils.box_pair_giou`).

Gain/gamma jitter and a light blur in both. After training, the confidence threshold is the one
that best separates the source-site validation images from NT-free crops of them (balanced
accuracy), and ``models/localizer.json`` records the settings, the threshold and the validation
figures. The step writes a completion marker and is skipped on a re-run; interrupted, it trains
again from the start (about a minute and a half on 2 CPU cores).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bundle.data.readers import read_image
from bundle.data.roi_zoom import ROIZoomGeometry, zoom_image
from bundle.data.transforms import LetterboxGeometry, letterbox_image
from bundle.evaluation.localization import localization_summary, locate_entries, nt_free_strip
from bundle.model.localizer import DEFAULTS, STRIDE, NTLocalizer, localizer_info_path
from bundle.utils.atomic import atomic_path, atomic_write_json
from monai.data.box_utils import box_pair_giou

logger = logging.getLogger("fetal_nt_roi_cae")


def crop_native(image: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """A (1, h, w) window ``[x0, y0, x1, y1]`` of a (1, H, W) image; parts outside the image are zero."""
    x0, y0, x1, y1 = (int(v) for v in window)
    height, width = image.shape[-2:]
    out = image.new_zeros((image.shape[0], y1 - y0, x1 - x0))
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if sx1 > sx0 and sy1 > sy0:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[:, sy0:sy1, sx0:sx1]
    return out


def _window_around(rng: np.random.Generator, low: float, high: float, size: int, span: int) -> int:
    """Start of a ``span`` wide window that holds ``[low, high)`` and, where it can, lies inside ``[0, size)``."""
    first = max(math.ceil(high) - span, min(0, size - span))
    last = min(math.floor(low), max(0, size - span))
    if last < first:
        return int(round(0.5 * (low + high) - 0.5 * span))
    return int(rng.integers(first, last + 1))


def photometric(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Gain, gamma and a light blur, so the localiser does not learn one site's grey levels."""
    gamma, gain = float(np.exp(rng.uniform(-0.35, 0.35))), float(np.exp(rng.uniform(-0.3, 0.3)))
    x = (x.clamp(0, 1) ** gamma * gain).clamp(0, 1)
    sigma = float(rng.uniform(0, 1.0))
    if sigma > 0.3:
        radius = 2
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum()
        x = F.conv2d(F.pad(x[None], (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))[0]
    return x


def coarse_sample(
    image: torch.Tensor, box: Sequence[float], rng: np.random.Generator, canvas_size: int, negative: bool
) -> tuple[torch.Tensor, list[float] | None]:
    """A random letterboxed view of a native image and the NT box on it (None for an NT-free view)."""
    height, width = image.shape[-2:]
    strip = nt_free_strip(box, width, height) if negative else None
    if strip is not None:  # 70-100 % of the NT-free strip along each side
        span_w = int((strip[2] - strip[0]) * rng.uniform(0.7, 1.0))
        span_h = int((strip[3] - strip[1]) * rng.uniform(0.7, 1.0))
        x0 = strip[0] + int(rng.integers(0, strip[2] - strip[0] - span_w + 1))
        y0 = strip[1] + int(rng.integers(0, strip[3] - strip[1] - span_h + 1))
    else:
        span_w = int(width * rng.uniform(0.6, 1.15))
        span_h = int(height * rng.uniform(0.6, 1.15))
        x0 = _window_around(rng, box[0], box[2], width, span_w)
        y0 = _window_around(rng, box[1], box[3], height, span_h)
    window = [x0, y0, x0 + span_w, y0 + span_h]
    crop = crop_native(image.float() / 255.0, window)
    geometry = LetterboxGeometry.compute(crop.shape[-1], crop.shape[-2], canvas_size)
    canvas = photometric(letterbox_image(crop, geometry), rng)
    if strip is not None:
        return canvas, None
    shifted = [box[0] - window[0], box[1] - window[1], box[2] - window[0], box[3] - window[1]]
    return canvas, geometry.map_box(shifted)


def heatmap_targets(
    boxes: Sequence[list[float] | None], canvas_size: int, sigma: float = 1.0
) -> dict[str, torch.Tensor]:
    """CenterNet targets at stride 4: Gaussian heat (peak 1 at the centre cell), offset and log-size there."""
    cells = canvas_size // STRIDE
    heat = torch.zeros(len(boxes), cells, cells)
    regression = torch.zeros(len(boxes), 4)
    index = torch.zeros(len(boxes), dtype=torch.long)
    positive = torch.zeros(len(boxes), dtype=torch.bool)
    grid = torch.arange(cells, dtype=torch.float32)
    for i, box in enumerate(boxes):
        if box is None:
            continue
        cx, cy = 0.5 * (box[0] + box[2]) / STRIDE, 0.5 * (box[1] + box[3]) / STRIDE
        col, row = min(cells - 1, max(0, int(cx))), min(cells - 1, max(0, int(cy)))
        heat[i] = torch.exp(-((grid[None, :] - col) ** 2 + (grid[:, None] - row) ** 2) / (2 * sigma**2))
        w, h = max(box[2] - box[0], 1.0) / STRIDE, max(box[3] - box[1], 1.0) / STRIDE
        regression[i] = torch.tensor([cx - col, cy - row, math.log(w), math.log(h)])
        index[i], positive[i] = row * cells + col, True
    return {"heat": heat, "regression": regression, "index": index, "positive": positive}


def coarse_loss(maps: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on the heat, plus L1 on offset and log-size at the centre cells."""
    p = torch.sigmoid(maps[:, 0]).clamp(1e-4, 1 - 1e-4)
    heat = targets["heat"]
    peak = heat >= 1.0 - 1e-6
    focal = -(((1 - p) ** 2) * torch.log(p) * peak + ((1 - heat) ** 4) * (p**2) * torch.log(1 - p) * ~peak).sum()
    positive = targets["positive"]
    loss = focal / max(1, int(positive.sum()))
    if positive.any():
        flat = maps[:, 1:].flatten(2)
        picked = flat.gather(2, targets["index"].view(-1, 1, 1).expand(-1, 4, 1))[..., 0]
        loss = loss + F.l1_loss(picked[positive], targets["regression"][positive])
    return loss


def refine_sample(
    image: torch.Tensor, box: Sequence[float], rng: np.random.Generator, view_size: int, margin: float
) -> tuple[torch.Tensor, list[float]]:
    """The zoom view around a jittered copy of ``box`` and the true box in fractions of that view."""
    height, width = image.shape[-2:]
    w, h = box[2] - box[0], box[3] - box[1]
    spread = 0.12 if rng.random() < 0.6 else 0.03  # the coarse stage's errors, and the second step's
    cx = 0.5 * (box[0] + box[2]) + w * float(np.clip(rng.normal(0, spread), -0.35, 0.35))
    cy = 0.5 * (box[1] + box[3]) + h * float(np.clip(rng.normal(0, spread), -0.35, 0.35))
    w2, h2 = w * float(np.exp(rng.normal(0, spread + 0.03))), h * float(np.exp(rng.normal(0, spread + 0.03)))
    jittered = [cx - 0.5 * w2, cy - 0.5 * h2, cx + 0.5 * w2, cy + 0.5 * h2]
    zoom = ROIZoomGeometry.compute(jittered, int(width), int(height), view_size, margin)
    view = photometric(zoom_image(image.float() / 255.0, zoom), rng)
    return view, [v / view_size for v in zoom.map_box(box)]


def read_training_images(entries: Sequence[dict]) -> list[tuple[torch.Tensor, list[float]]]:
    """Native images as 8-bit (1, H, W) tensors with their boxes (entries without a box are left out)."""
    out = []
    for entry in entries:
        if entry.get("roi") is None:
            continue
        array = read_image(entry["image"]).array
        out.append((torch.from_numpy(np.rint(np.clip(array, 0, 1) * 255).astype(np.uint8))[None], list(entry["roi"])))
    return out


def _batches(n: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def fit_threshold(positive: Sequence[float], negative: Sequence[float]) -> tuple[float, float]:
    """The confidence threshold with the best balanced accuracy between NT views and NT-free views.

    Returns:
        (threshold, balanced accuracy); the threshold is halfway between neighbouring confidences.
    """
    pos, neg = np.asarray(positive, float), np.asarray(negative, float)
    values = np.unique(np.concatenate([pos, neg]))
    candidates = np.concatenate([[values[0] - 1e-6], 0.5 * (values[1:] + values[:-1]), [values[-1] + 1e-6]])
    scores = [0.5 * (np.mean(pos >= t) + np.mean(neg < t)) for t in candidates]
    best = int(np.argmax(scores))
    return float(candidates[best]), float(scores[best])


def train_localizer(
    train_entries: Sequence[dict],
    val_entries: Sequence[dict],
    output_path: str | os.PathLike,
    complete_marker: str | os.PathLike,
    epochs: int = 20,
    refine_epochs: int = 30,
    batch_size: int = 32,
    lr: float = 2e-3,
    negative_fraction: float = 0.15,
    seed: int = 0,
    settings: dict | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Train both stages and write ``output_path`` (weights) and ``localizer.json`` (settings, threshold, figures).

    Args:
        train_entries: training datalist entries (``image``, ``roi``).
        val_entries: source-site validation entries (threshold and the logged figures).
        output_path: ``models/localizer.pt``.
        complete_marker: written when done; a re-run with it present is skipped.
        epochs: coarse-stage epochs.
        refine_epochs: refinement epochs.
        batch_size: views per step.
        lr: Adam learning rate (cosine decay to 5 %).
        negative_fraction: share of NT-free views in the coarse stage.
        seed: seeds the views and the weights.
        settings: network settings (:data:`bundle.model.localizer.DEFAULTS` keys) overriding the defaults.
        device: where to train.

    Returns:
        the contents of ``localizer.json``.
    """
    if Path(complete_marker).exists() and Path(output_path).exists():
        logger.info(f"NT localiser: already trained ({complete_marker}); skipping. Delete it to train again.")
        return json.loads(localizer_info_path(output_path).read_text())
    started = time.perf_counter()
    images = read_training_images(train_entries)
    if not images:
        raise ValueError("no training entry has an NT box ('roi'): the localiser learns from boxes")
    logger.info(f"NT localiser: {len(images)} training images, coarse {epochs} + refine {refine_epochs} epochs")
    config = {**DEFAULTS, **(settings or {})}
    with torch.random.fork_rng(devices=[]):  # later steps see the same random state whether this one ran or not
        torch.manual_seed(int(seed))
        rng = np.random.default_rng(int(seed))
        network = NTLocalizer(**config).to(device)
        _fit(network.coarse, images, epochs, batch_size, lr, rng, device, "coarse", negative_fraction, config)
        _fit(network.refine, images, refine_epochs, batch_size, lr, rng, device, "refine", negative_fraction, config)
    network.eval()
    validation = _validate(network, val_entries)
    threshold, balanced = fit_threshold(validation.pop("confidences"), validation.pop("nt_free_confidences"))
    network.settings["threshold"] = threshold
    info = {
        "settings": network.settings,
        "validation": {**validation, "visibility_balanced_accuracy": balanced},
        "training": {"images": len(images), "epochs": epochs, "refine_epochs": refine_epochs, "seed": int(seed)},
        "seconds": round(time.perf_counter() - started, 1),
    }
    with atomic_path(output_path) as tmp:
        torch.save(network.state_dict(), tmp)
    atomic_write_json(localizer_info_path(output_path), info, indent=4)  # the zoo's pretty-format-json style
    atomic_write_json(complete_marker, {"seconds": info["seconds"]})
    logger.info(
        f"NT localiser: {info['seconds']:.0f} s; source validation IoU median {validation['iou_median']:.3f}, "
        f"IoU >= 0.5 on {validation['iou_ge_0.5_pct']:.1f} %, threshold {threshold:.2f} "
        f"(NT vs NT-free balanced accuracy {balanced:.3f}); saved {output_path}"
    )
    return info


def _fit(module, images, epochs, batch_size, lr, rng, device, stage, negative_fraction, config) -> None:
    """Train one stage (``coarse`` or ``refine``) with Adam and a cosine schedule."""
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    steps = max(1, epochs * math.ceil(len(images) / batch_size))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps))
    )
    module.train()
    for epoch in range(epochs):
        total, count = 0.0, 0
        for index in _batches(len(images), batch_size, rng):
            if stage == "coarse":
                samples = [
                    coarse_sample(*images[i], rng, config["canvas_size"], rng.random() < negative_fraction)
                    for i in index
                ]
                inputs = torch.stack([s[0] for s in samples]).to(device)
                targets = heatmap_targets([s[1] for s in samples], config["canvas_size"])
                loss = coarse_loss(module(inputs), {k: v.to(device) for k, v in targets.items()})
            else:
                samples = [refine_sample(*images[i], rng, config["view_size"], config["margin"]) for i in index]
                inputs = torch.stack([s[0] for s in samples]).to(device)
                target = torch.tensor([s[1] for s in samples], device=device)
                pred = module(inputs)
                giou = box_pair_giou(_ordered(pred), target)
                loss = F.l1_loss(pred, target) + (1 - giou).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, count = total + loss.item() * len(index), count + len(index)
        if epoch == 0 or (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            logger.info(f"NT localiser {stage}: epoch {epoch + 1}/{epochs}, loss {total / max(1, count):.4f}")


def _ordered(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes with x0 <= x1 and y0 <= y1 (a fresh regressor may predict them swapped)."""
    x = torch.stack([torch.minimum(boxes[:, 0], boxes[:, 2]), torch.maximum(boxes[:, 0], boxes[:, 2])], 1)
    y = torch.stack([torch.minimum(boxes[:, 1], boxes[:, 3]), torch.maximum(boxes[:, 1], boxes[:, 3])], 1)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)


def _validate(network: NTLocalizer, entries: Sequence[dict]) -> dict:
    """IoU figures on the validation entries and the confidences of their NT and NT-free views."""
    rows = locate_entries(network, entries)
    summary = localization_summary(rows)
    return {
        "n": summary["n"],
        "iou_median": summary["iou_median"],
        "iou_ge_0.5_pct": summary["iou_ge_0.5_pct"],
        "centre_error_median_mm": summary["centre_error_median_mm"],
        "confidences": [r["confidence"] for r in rows],
        "nt_free_confidences": [r["nt_free_confidence"] for r in rows if r["nt_free_confidence"] is not None],
    }
