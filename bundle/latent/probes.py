"""Frozen-latent probes (SPEC 6): provenance, OOD detection, ROI-quality probe, and the probe report.

Every probe reads latents from a frozen encoder (phase 1 and phase 2 compared) and never updates it:
- provenance: a linear classifier of the source site; on the held-out site, how sure it is
  (mean max-softmax) and how uncertain (mean entropy, natural log; ``ln(n_sources)`` at most);
- OOD: Mahalanobis distance (Ledoit-Wolf shrinkage) and KNN distance (k = 1/5/10, L2-normalised
  latents) to the training latents; AUROC with the held-out site positive, source validation negative;
- QC: ridge regression latent -> ROI Edge-MAE fitted on source sites, tested on the held-out site.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from bundle.latent.ood import auroc, fit_gaussian, knn_distance, mahalanobis
from bundle.latent.scoring import fit_quality_probe
from bundle.utils.atomic import atomic_write_json, atomic_write_text
from scipy.stats import spearmanr
from torch import nn

logger = logging.getLogger("fetal_nt_roi_cae")

# The paper's figures (phase 1 -> phase 2), quoted beside ours for orientation only (SPEC 6).
PAPER = {
    "held_out_max_softmax": "0.556 -> 0.541",
    "held_out_entropy": "0.684 -> 0.688",
    "auroc_mahalanobis": "up to 0.9956",
}


@dataclass
class ProbeSettings:
    """Probe hyper-parameters (SPEC 6 defaults).

    Args:
        provenance_epochs: epochs of the provenance probe.
        provenance_lr: Adam learning rate of the provenance probe.
        provenance_weight_decay: Adam weight decay of the provenance probe.
        provenance_batch_size: minibatch size of the provenance probe.
        knn_k: neighbour ranks of the KNN OOD score.
        interpolation_steps: images in the latent interpolation strip (ends included).
        perturbation_sigmas: multiples of the per-dimension latent std added as noise.
        umap: also draw a UMAP plot when ``umap-learn`` is installed.
        seed: seed of the probe's initialisation, shuffling and perturbation noise.
    """

    provenance_epochs: int = 100
    provenance_lr: float = 1e-2
    provenance_weight_decay: float = 1e-4
    provenance_batch_size: int = 32
    knn_k: list[int] = field(default_factory=lambda: [1, 5, 10])
    interpolation_steps: int = 7
    perturbation_sigmas: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0])
    umap: bool = True
    seed: int = 0


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy (natural log) of each row of class probabilities."""
    p = np.asarray(probabilities, np.float64)
    return -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)


def train_provenance_probe(
    latents: np.ndarray, sites: np.ndarray, settings: ProbeSettings
) -> tuple[nn.Linear, np.ndarray, np.ndarray, np.ndarray]:
    """Fit ``Linear(D, n_sites)`` on standardised latents with cross-entropy (Adam).

    Args:
        latents: (N, D) training latents.
        sites: (N,) site id of each latent.
        settings: epochs, learning rate, weight decay, batch size and seed.

    Returns:
        the linear layer, the standardisation mean and std, and the sorted site ids (class order).
    """
    classes = np.unique(sites)
    if len(classes) < 2:
        raise ValueError(f"the provenance probe needs at least two source sites, got {classes.tolist()}")
    mean, std = latents.mean(0), latents.std(0) + 1e-8
    x = torch.as_tensor((latents - mean) / std, dtype=torch.float32)
    y = torch.as_tensor(np.searchsorted(classes, sites), dtype=torch.long)
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    probe = nn.Linear(x.shape[1], len(classes))
    optimizer = torch.optim.Adam(
        probe.parameters(), lr=settings.provenance_lr, weight_decay=settings.provenance_weight_decay
    )
    for _ in range(settings.provenance_epochs):
        for idx in torch.randperm(len(x), generator=generator).split(settings.provenance_batch_size):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(probe(x[idx]), y[idx]).backward()
            optimizer.step()
    return probe.eval(), mean, std, classes


def provenance_probabilities(probe: nn.Linear, mean: np.ndarray, std: np.ndarray, latents: np.ndarray) -> np.ndarray:
    """Softmax over source sites for each latent."""
    with torch.no_grad():
        logits = probe(torch.as_tensor((latents - mean) / std, dtype=torch.float32))
    return torch.softmax(logits, dim=1).numpy().astype(np.float64)


def provenance_metrics(tables: dict[str, dict], settings: ProbeSettings) -> dict[str, float]:
    """Source-site accuracy (validation) and held-out mean max-softmax and entropy of the provenance probe."""
    train, val, held = tables["train"], tables["val"], tables["held_out"]
    probe, mean, std, classes = train_provenance_probe(train["z"], train["site"], settings)
    val_probs = provenance_probabilities(probe, mean, std, val["z"])
    held_probs = provenance_probabilities(probe, mean, std, held["z"])
    return {
        "n_sources": len(classes),
        "max_entropy": float(np.log(len(classes))),
        "source_train_accuracy": float(
            (classes[provenance_probabilities(probe, mean, std, train["z"]).argmax(1)] == train["site"]).mean()
        ),
        "source_val_accuracy": float((classes[val_probs.argmax(1)] == val["site"]).mean()),
        "held_out_max_softmax": float(held_probs.max(1).mean()),
        "held_out_entropy": float(entropy(held_probs).mean()),
    }


def ood_scores(tables: dict[str, dict], ks: list[int]) -> dict[str, dict[str, np.ndarray]]:
    """Mahalanobis and KNN scores of the validation and held-out latents against the training latents."""
    gaussian = fit_gaussian(tables["train"]["z"])
    scores = {"mahalanobis": {s: mahalanobis(tables[s]["z"], gaussian) for s in ("val", "held_out")}}
    for k in ks:
        if k > len(tables["train"]["z"]):
            logger.warning("KNN k=%d skipped: only %d training latents", k, len(tables["train"]["z"]))
            continue
        scores[f"knn_k{k}"] = {s: knn_distance(tables[s]["z"], tables["train"]["z"], k) for s in ("val", "held_out")}
    scores["_shrinkage"] = gaussian.shrinkage
    return scores


def ood_metrics(scores: dict) -> dict[str, float]:
    """AUROC of each OOD score (held-out site positive, source validation negative)."""
    out = {f"auroc_{name}": auroc(s["val"], s["held_out"]) for name, s in scores.items() if not name.startswith("_")}
    out["mahalanobis_shrinkage"] = float(scores["_shrinkage"])
    return out


def quality_metrics(tables: dict[str, dict]) -> dict[str, float]:
    """Ridge probe latent -> ROI Edge-MAE: fitted on source training latents, tested on the held-out site."""
    train, held = tables["train"], tables["held_out"]
    probe = fit_quality_probe(train["z"], train["roi_edge_mae"])
    predicted, actual = probe.predict(held["z"]), held["roi_edge_mae"].astype(np.float64)
    residual = ((actual - predicted) ** 2).sum()
    total = ((actual - actual.mean()) ** 2).sum()
    rho = spearmanr(predicted, actual).statistic if np.ptp(predicted) > 0 else float("nan")
    return {
        "r2": float(1.0 - residual / total) if total > 0 else float("nan"),
        "spearman": float(rho),
        "mae": float(np.abs(actual - predicted).mean()),
        "mae_predict_train_mean": float(np.abs(actual - train["roi_edge_mae"].mean()).mean()),
        "ridge_alpha": probe.alpha,
    }


def probe_phase(network: nn.Module, loaders: dict, device, settings: ProbeSettings) -> tuple[dict, dict, dict]:
    """Latents and every probe metric of one frozen network.

    Returns:
        (latent tables per split, metrics, OOD scores per split).
    """
    from bundle.latent.latents import collect_latents

    tables = {split: collect_latents(network, loader, device) for split, loader in loaders.items()}
    scores = ood_scores(tables, settings.knn_k)
    metrics = {
        "provenance": provenance_metrics(tables, settings),
        "ood": ood_metrics(scores),
        "quality": quality_metrics(tables),
        "n": {split: len(t["z"]) for split, t in tables.items()},
    }
    return tables, metrics, scores


def _fmt(value: float) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def probes_markdown(metrics: dict, site_names: dict[int, str] | None = None) -> str:
    """The probe report as Markdown: one table per probe, phases side by side, paper figures quoted."""
    phases = list(metrics)
    head = "| | " + " | ".join(phases) + " | paper (phase 1 -> 2) |"
    rule = "|---" * (len(phases) + 2) + "|"
    n = metrics[phases[0]]["n"]
    lines = [
        "# Frozen-latent probe report",
        "",
        f"Latents: {n['train']} source training, {n['val']} source validation, {n['held_out']} held-out images.",
        "",
    ]
    sections = (
        ("Provenance (linear probe of the source site)", "provenance"),
        ("OOD detection (AUROC: held-out site vs source validation)", "ood"),
        ("ROI-quality probe (ridge: latent -> ROI Edge-MAE, tested on the held-out site)", "quality"),
    )
    for title, key in sections:
        lines += [f"## {title}", "", head, rule]
        for name in metrics[phases[0]][key]:
            cells = [_fmt(metrics[p][key][name]) for p in phases]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {PAPER.get(name, '')} |")
        lines.append("")
    lines += [
        "Max-softmax and entropy are means over held-out images; entropy uses the natural log, so its maximum "
        "is ln(number of source sites). The paper's figures come from its own data and are quoted for "
        "orientation, not as a target.",
        "",
    ]
    return "\n".join(lines)


def write_probe_report(
    network_template: nn.Module,
    model_paths: dict[str, str | os.PathLike],
    loaders: dict,
    output_dir: str | os.PathLike,
    device,
    settings: ProbeSettings | dict | None = None,
    site_names: dict[int, str] | None = None,
    figures: bool = True,
) -> dict:
    """Run every probe on each phase's frozen encoder and write ``probes.json``, ``probes.md`` and figures.

    Args:
        network_template: a network of the trained architecture (copied per phase, not modified).
        model_paths: ``{"phase1": path, "phase2": path}`` of full-model checkpoints.
        loaders: ``{"train": ..., "val": ..., "held_out": ...}`` without augmentation.
        output_dir: report folder (``runs/<preset>/probes``).
        device: where to run the networks.
        settings: :class:`ProbeSettings` or a dict of its fields.
        site_names: site id -> name for legends.
        figures: also draw the PCA/UMAP plots, score histograms and interpolation/perturbation strips.

    Returns:
        the metrics per phase (what ``probes.json`` holds).
    """
    from bundle.latent.figures import draw_probe_figures
    from bundle.latent.latents import concat_splits, save_latents
    from bundle.utils.checkpoints import load_model_weights

    settings = ProbeSettings(**settings) if isinstance(settings, dict) else settings or ProbeSettings()
    output = Path(output_dir)
    metrics, by_phase = {}, {}
    for phase, path in model_paths.items():
        network = load_model_weights(copy.deepcopy(network_template).cpu(), path).to(device).eval()
        tables, metrics[phase], scores = probe_phase(network, loaders, device, settings)
        save_latents(output / f"latents_{phase}.npz", concat_splits(tables))
        by_phase[phase] = (network, tables, scores)
        ood = metrics[phase]["ood"]
        logger.info(
            "probes %s: Mahalanobis AUROC %.3f, KNN(k=5) AUROC %s, held-out entropy %.3f, QC R^2 %.3f",
            phase,
            ood["auroc_mahalanobis"],
            _fmt(ood.get("auroc_knn_k5", float("nan"))),
            metrics[phase]["provenance"]["held_out_entropy"],
            metrics[phase]["quality"]["r2"],
        )
    atomic_write_json(output / "probes.json", {"metrics": metrics, "settings": settings.__dict__, "paper": PAPER})
    atomic_write_text(output / "probes.md", probes_markdown(metrics, site_names))
    if figures:
        draw_probe_figures(by_phase, loaders, output, device, settings, site_names or {})
    logger.info("probe report written to %s", output)
    return metrics
