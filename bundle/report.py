"""Evaluate the best phase-1 and phase-2 checkpoints and write the report (SPEC 5).

Per image: PSNR, SSIM and MS-SSIM on the whole canvas and on the content region (padding
excluded), ROI MAE, ROI PSNR and ROI Edge-MAE. Per phase and split: means, and the phase-2 minus
phase-1 differences, absolute and relative (%), in the paper's form. Written as
``report/metrics.json``, ``report/metrics.md``, ``report/per_image.csv`` and a figure.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bundle.atomic import atomic_path, atomic_write_csv, atomic_write_json, atomic_write_text
from bundle.checkpoints import load_model_weights
from bundle.metrics import METRIC_NAMES, ms_ssim, psnr, roi_edge_error, roi_mae, ssim

logger = logging.getLogger("fetal_nt_roi_cae")

CONTENT_METRICS = ("psnr_content", "ssim_content", "ms_ssim_content")
ALL_METRICS = METRIC_NAMES + CONTENT_METRICS
LOWER_IS_BETTER = {"roi_mae", "roi_edge_mae"}
PAPER_DELTAS = {
    "val": {"psnr": "+0.27 dB", "roi_mae": "-8.87 %", "roi_edge_mae": "-11.10 %"},
    "held_out": {"psnr": "+0.29 dB", "roi_mae": "-6.43 %", "roi_edge_mae": "-4.90 %"},
}


def _content_boxes(letterbox: dict, batch_size: int) -> list[tuple[int, int, int, int]]:
    """Content box (x0, y0, x1, y1) of each item from a collated letterbox geometry."""
    boxes = []
    for i in range(batch_size):
        dx, dy = int(letterbox["dx"][i]), int(letterbox["dy"][i])
        width, height = int(letterbox["resized_size"][0][i]), int(letterbox["resized_size"][1][i])
        boxes.append((dx, dy, dx + width, dy + height))
    return boxes


def per_image_rows(preds: torch.Tensor, batch: dict) -> list[dict]:
    """Every metric of :data:`ALL_METRICS` for each image of a batch.

    Args:
        preds: reconstructions (B, 1, S, S).
        batch: the collated batch (``image``, ``roi_mask``, ``letterbox``, ``case_id``, ``site``).

    Returns:
        one dict per image with ``case_id``, ``site``, ``roi_area_px`` and the metrics.
    """
    images = torch.as_tensor(batch["image"]).float().to(preds.device)
    masks = torch.as_tensor(batch["roi_mask"]).float().to(preds.device)
    preds = preds.float()
    values = {
        "psnr": psnr(preds, images),
        "ssim": ssim(preds, images),
        "ms_ssim": ms_ssim(preds, images),
        "roi_mae": roi_mae(preds, images, masks),
        "roi_psnr": psnr(preds, images, mask=masks),
        "roi_edge_mae": roi_edge_error(preds, images, masks),
    }
    rows = []
    for i, (x0, y0, x1, y1) in enumerate(_content_boxes(batch["letterbox"], len(images))):
        p, y = preds[i : i + 1, :, y0:y1, x0:x1], images[i : i + 1, :, y0:y1, x0:x1]
        row = {"case_id": batch["case_id"][i], "site": int(batch["site"][i]), "roi_area_px": float(masks[i].sum())}
        row.update({name: float(v[i]) for name, v in values.items()})
        row.update(
            {
                "psnr_content": float(psnr(p, y)),
                "ssim_content": float(ssim(p, y)),
                "ms_ssim_content": float(ms_ssim(p, y)),
            }
        )
        rows.append(row)
    return rows


@torch.no_grad()
def evaluate_network(network: nn.Module, data_loader, device: str | torch.device = "cpu") -> list[dict]:
    """Per-image metrics (:func:`per_image_rows`) of a network over a loader of letterboxed items."""
    network.eval()
    rows = []
    for batch in data_loader:
        rows += per_image_rows(network(torch.as_tensor(batch["image"]).float().to(device)), batch)
    return rows


def summarize(rows: list[dict]) -> dict[str, float]:
    """Mean of every metric over rows, plus ``n``."""
    summary = {name: float(np.mean([r[name] for r in rows])) for name in ALL_METRICS}
    summary["n"] = len(rows)
    return summary


def phase_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, dict[str, float]]:
    """Phase-2 minus phase-1 difference per metric: absolute and relative (%)."""
    return {
        name: {
            "absolute": after[name] - before[name],
            "relative_pct": 100.0 * (after[name] - before[name]) / abs(before[name]),
        }
        for name in ALL_METRICS
    }


def _markdown(results: dict, deltas: dict, loss_weights: dict | None) -> str:
    splits = {"val": "source-site validation", "held_out": "held-out site"}
    lines = ["# Reconstruction report", ""]
    for split, title in splits.items():
        if split not in deltas:
            continue
        lines += [
            f"## {title}",
            "",
            f"n = {results['phase1'][split]['n']} images",
            "",
            "| metric | phase 1 | phase 2 | phase 2 - phase 1 | relative | paper (phase 2 vs 1) |",
            "|---|---|---|---|---|---|",
        ]
        for name in ALL_METRICS:
            p1, p2 = results["phase1"][split][name], results["phase2"][split][name]
            delta = deltas[split][name]
            better = "lower" if name in LOWER_IS_BETTER else "higher"
            lines.append(
                f"| {name} ({better} is better) | {p1:.4f} | {p2:.4f} | {delta['absolute']:+.4f} | "
                f"{delta['relative_pct']:+.2f} % | "
                f"{PAPER_DELTAS[split].get(name, '')} |"
            )
        lines.append("")
    if loss_weights:
        lines += ["## Phase-2 loss weights", "", "| term | weight |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in loss_weights.items()]
        lines.append("")
    return "\n".join(lines)


def _figure(network_by_phase: dict[str, nn.Module], loaders: dict, path: Path, device, max_images: int = 3) -> None:
    """Original / phase-1 / phase-2 reconstructions and error maps with the ROI box, per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    panels = []
    for split, loader in loaders.items():
        batch = next(iter(loader))
        images = torch.as_tensor(batch["image"][:max_images]).float().to(device)
        recons = {}
        with torch.no_grad():
            for phase, network in network_by_phase.items():
                network.eval()
                recons[phase] = network(images).cpu()
        for i in range(len(images)):
            panels.append(
                (
                    split,
                    batch["case_id"][i],
                    images[i, 0].cpu(),
                    {k: v[i, 0] for k, v in recons.items()},
                    batch["roi"][i],
                )
            )
    columns = ["original"] + [f"{p} recon" for p in network_by_phase] + [f"{p} |error|" for p in network_by_phase]
    fig, axes = plt.subplots(len(panels), len(columns), figsize=(2.2 * len(columns), 2.3 * len(panels)), squeeze=False)
    for row, (split, case_id, image, recons, roi) in enumerate(panels):
        shown = [image] + list(recons.values()) + [(r - image).abs() for r in recons.values()]
        for col, (title, data) in enumerate(zip(columns, shown, strict=True)):
            ax = axes[row, col]
            ax.imshow(
                data.numpy(), cmap="magma" if "error" in title else "gray", vmin=0, vmax=0.5 if "error" in title else 1
            )
            x0, y0, x1, y1 = (float(v) for v in roi)
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=0.7))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{split}\n{case_id}", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def write_report(
    network_factory,
    checkpoints: dict[str, str | os.PathLike],
    loaders: dict,
    output_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    loss_weights_file: str | os.PathLike | None = None,
) -> dict:
    """Evaluate each phase's checkpoint on each split and write the report files.

    Args:
        network_factory: callable returning a fresh network of the trained architecture.
        checkpoints: ``{"phase1": path, "phase2": path}`` (``{"model": state_dict}`` files).
        loaders: ``{"val": loader, "held_out": loader}`` of letterboxed items (unshuffled).
        output_dir: the run folder; files go to ``output_dir/report``.
        device: where to evaluate.
        loss_weights_file: JSON written by gradient calibration, quoted in the report.

    Returns:
        the metrics dict written to ``metrics.json``.
    """
    report_dir = Path(output_dir) / "report"
    networks = {phase: load_model_weights(network_factory(), path).to(device) for phase, path in checkpoints.items()}
    per_image: list[dict] = []
    results: dict[str, dict] = {}
    for phase, network in networks.items():
        results[phase] = {}
        for split, loader in loaders.items():
            rows = evaluate_network(network, loader, device)
            results[phase][split] = summarize(rows)
            per_image += [{"phase": phase, "split": split, **row} for row in rows]
            logger.info(
                f"report: {phase} on {split}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in results[phase][split].items() if k != "n")
            )
    deltas = (
        {split: phase_deltas(results["phase1"][split], results["phase2"][split]) for split in loaders}
        if len(networks) == 2
        else {}
    )
    loss_weights = None
    if loss_weights_file and Path(loss_weights_file).exists():
        loss_weights = json.loads(Path(loss_weights_file).read_text())["weights"]
    metrics = {
        "phases": results,
        "phase2_minus_phase1": deltas,
        "loss_weights": loss_weights,
        "checkpoints": {k: str(v) for k, v in checkpoints.items()},
        "paper_reference_deltas": PAPER_DELTAS,
    }
    atomic_write_json(report_dir / "metrics.json", metrics)
    if deltas:
        atomic_write_text(report_dir / "metrics.md", _markdown(results, deltas, loss_weights))
    columns = ["phase", "split", "case_id", "site", "roi_area_px", *ALL_METRICS]
    atomic_write_csv(report_dir / "per_image.csv", per_image, columns)
    _figure(networks, loaders, report_dir / "reconstructions.png", device)
    logger.info(f"report written to {report_dir} (metrics.json, metrics.md, per_image.csv, reconstructions.png)")
    return metrics
