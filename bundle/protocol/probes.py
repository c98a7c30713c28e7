"""Frozen-latent probes for every rotation of the evaluation protocol (OOD AUROC per held-out site)."""

from __future__ import annotations

import numpy as np
from bundle.latent.probes import PAPER, ProbeSettings, write_probe_report

# (section, metric, label) of the per-rotation table.
ROTATION_COLUMNS = (
    ("ood", "auroc_mahalanobis", "Mahalanobis AUROC"),
    ("ood", "auroc_knn_k1", "KNN k=1 AUROC"),
    ("ood", "auroc_knn_k5", "KNN k=5 AUROC"),
    ("ood", "auroc_knn_k10", "KNN k=10 AUROC"),
    ("provenance", "source_val_accuracy", "provenance source acc."),
    ("provenance", "held_out_max_softmax", "held-out max-softmax"),
    ("provenance", "held_out_entropy", "held-out entropy"),
    ("quality", "r2", "QC R^2"),
    ("quality", "spearman", "QC Spearman"),
)


def probe_study(settings, finished_runs) -> dict:
    """Run the probes (no figures) on each finished run of the method and average over seeds.

    Args:
        settings: the :class:`~bundle.protocol.variants.ProtocolSettings` (for the seed of the probe).
        finished_runs: ``(site, seed, run folders, parsed config)`` of every finished main run
            (:func:`~bundle.protocol.runs.finished_main_runs`).

    Returns:
        ``{site: {phase: {label: mean over seeds}}}``; each run's own report is in
        ``probes/`` of the run's output folder.
    """
    from monai.utils import set_determinism

    collected: dict = {}
    for site, seed, paths, parser in finished_runs:
        set_determinism(seed=seed)
        metrics = write_probe_report(
            parser.get_parsed_content("network_def"),
            {"phase1": paths.models / "phase1/model.pt", "phase2": paths.models / "model.pt"},
            {
                "train": parser.get_parsed_content("scoring#train_dataloader"),
                "val": parser.get_parsed_content("report#val_dataloader"),
                "held_out": parser.get_parsed_content("report#held_out_dataloader"),
            },
            paths.output / "probes",
            "cpu",
            ProbeSettings(seed=seed, umap=False),
            figures=False,
        )
        for phase, values in metrics.items():
            target = collected.setdefault(site, {}).setdefault(phase, {})
            for section, name, label in ROTATION_COLUMNS:
                target.setdefault(label, []).append(values[section].get(name, float("nan")))
    return {
        site: {phase: {label: float(np.mean(v)) for label, v in labels.items()} for phase, labels in phases.items()}
        for site, phases in collected.items()
    }


def probe_table(study: dict, site_names: dict) -> list[str]:
    """Markdown table of :func:`probe_study`: a row per rotation and phase."""
    if not study:
        return []
    labels = [label for _, _, label in ROTATION_COLUMNS]
    lines = [
        "## Frozen-latent probes per rotation",
        "",
        "OOD AUROC: held-out site (positive) vs source validation (negative), scores fitted on the source "
        "training latents. Provenance: linear probe of the source site. QC: ridge latent -> ROI Edge-MAE "
        f"tested on the held-out site. Paper, for orientation: Mahalanobis AUROC {PAPER['auroc_mahalanobis']}, "
        f"held-out max-softmax {PAPER['held_out_max_softmax']}, entropy {PAPER['held_out_entropy']}.",
        "",
        "| held-out site | phase | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    for site, phases in study.items():
        for phase, values in phases.items():
            cells = " | ".join(f"{values[label]:.3f}" for label in labels)
            lines.append(f"| {site_names.get(site, site)} | {phase} | {cells} |")
    return [*lines, ""]
