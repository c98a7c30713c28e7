"""The evaluation protocol (SPEC 5): every leave-one-site-out rotation, several seeds, ablations.

``python -m bundle protocol`` trains each (rotation, seed, variant) with the bundle's own training
workflow in a subprocess (a run whose report exists is skipped, so the command resumes), then
pools the per-image results into one report: means with bootstrap CIs, paired phase-2 minus
phase-1 differences with Wilcoxon p-values, relative changes in the paper's form, seed spread,
ablations against the main method, ROI-jitter robustness and NT measurement fidelity.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bundle.evaluation.statistics import bootstrap_ci, paired_comparison, seed_spread
from bundle.utils.paths import REPO_ROOT, TRAIN_CONFIG

logger = logging.getLogger("fetal_nt_roi_cae")
MAIN = "roi_cae"
REPORT_METRICS = (
    "psnr",
    "ssim",
    "ms_ssim",
    "roi_mae",
    "roi_psnr",
    "roi_edge_mae",
    "psnr_content",
    "ssim_content",
    "ms_ssim_content",
    "zoom_psnr",
    "zoom_roi_mae",
    "zoom_roi_edge_mae",
)
PAPER_MODEL = "paper_model"


@dataclass(frozen=True)
class Variant:
    """One method of the comparison.

    Args:
        description: what it is, for the report.
        overlays: extra config files after ``configs/train.json``.
        overrides: extra ``--key value`` settings.
        shares_phase1: True when phase 1 is the main method's (only phase 2 differs), so the main
            run's phase-1 model is reused instead of retrained.
        all_rotations: run on every rotation, not only on the ablation sites.
    """

    description: str
    overlays: tuple[str, ...] = ()
    overrides: dict = field(default_factory=dict)
    shares_phase1: bool = False
    all_rotations: bool = False


VARIANTS: dict[str, Variant] = {
    MAIN: Variant("dual-view ROI-aware CAE (letterbox + ROI-zoom view), two phases, calibrated weights (the method)"),
    PAPER_MODEL: Variant(
        "the paper's single-view CAE (model: paper), same phases and budget",
        overrides={"model": "paper"},
        all_rotations=True,
    ),
    "phase1_longer": Variant(
        "phase 1 only, trained for the phase-2 budget too (phase 2 uses the phase-1 loss)",
        ("configs/ablations/phase2_global_only.json",),
        shares_phase1=True,
    ),
    "equal_weights": Variant("phase 2 with equal weights", overrides={"loss_weighting": "equal"}, shares_phase1=True),
    "uncertainty": Variant(
        "phase 2 with uncertainty weighting (Kendall et al. 2018)",
        overrides={"loss_weighting": "uncertainty"},
        shares_phase1=True,
    ),
    "freeze_encoder": Variant(
        "phase 2 with a frozen encoder", overrides={"phase2_freeze": "encoder"}, shares_phase1=True
    ),
    "joint": Variant("single stage: ROI terms (equal weights) from the start", ("configs/ablations/joint.json",)),
}


@dataclass
class ProtocolSettings:
    """What the protocol runs.

    Args:
        output_dir: protocol folder (runs and ``report/``).
        dataset_dir: dataset folder (synthetic data is generated there when missing).
        sites: held-out sites (one rotation each).
        seeds: training seeds.
        variants: methods to train (``roi_cae`` always included).
        ablation_sites: rotations on which the ablations run.
        phase1_epochs: phase-1 epochs of every run.
        phase2_epochs: phase-2 epochs of every run.
        overrides: further ``--key value`` settings for every run.
    """

    output_dir: Path
    dataset_dir: Path
    sites: list[int]
    seeds: list[int]
    variants: list[str]
    ablation_sites: list[int]
    phase1_epochs: int = 60
    phase2_epochs: int = 30
    overrides: dict = field(default_factory=dict)

    def run_dir(self, site: int, seed: int, variant: str) -> Path:
        """Bundle root of one run."""
        return self.output_dir / "runs" / f"heldout{site}_seed{seed}" / variant

    def jobs(self) -> list[tuple[int, int, str]]:
        """(site, seed, variant) in the order they run (the main method first in each rotation)."""
        jobs = []
        for site in self.sites:
            for seed in self.seeds:
                jobs.append((site, seed, MAIN))
                jobs += [
                    (site, seed, v)
                    for v in self.variants
                    if v != MAIN and (site in self.ablation_sites or VARIANTS[v].all_rotations)
                ]
        return jobs

    def overrides_for(self, site: int, seed: int, variant: str) -> dict:
        """Every ``--key value`` of one run."""
        root = self.run_dir(site, seed, variant)
        return {
            "bundle_root": str(root),
            "dataset_dir": str(self.dataset_dir),
            "held_out_site": site,
            "seed": seed,
            "phase1_epochs": self.phase1_epochs,
            "phase2_epochs": self.phase2_epochs,
            **self.overrides,
            **VARIANTS[variant].overrides,
        }

    def config_files(self, variant: str) -> list[str]:
        """Config files of a variant, first to last."""
        return [str(TRAIN_CONFIG), *(str(REPO_ROOT / o) for o in VARIANTS[variant].overlays)]


def _seed_phase1_from_main(settings: ProtocolSettings, site: int, seed: int, variant: str) -> None:
    """Give a shares-phase-1 variant the main run's finished phase 1, so only phase 2 trains."""
    main, target = settings.run_dir(site, seed, MAIN), settings.run_dir(site, seed, variant)
    if (target / "runs/quick/phase1_complete.json").exists():
        return
    shutil.copytree(main / "models/phase1", target / "models/phase1", dirs_exist_ok=True)
    (target / "runs/quick").mkdir(parents=True, exist_ok=True)
    shutil.copy(main / "runs/quick/phase1_complete.json", target / "runs/quick/phase1_complete.json")


def train_run(settings: ProtocolSettings, site: int, seed: int, variant: str) -> Path:
    """Train and report one run in a subprocess; skipped when its report exists.

    Returns:
        the run's ``per_image.csv``.

    Raises:
        RuntimeError: when the run fails (the end of its log is in the message).
    """
    root = settings.run_dir(site, seed, variant)
    per_image = root / "runs/quick/report/per_image.csv"
    if per_image.exists():
        return per_image
    root.mkdir(parents=True, exist_ok=True)
    if VARIANTS[variant].shares_phase1:
        _seed_phase1_from_main(settings, site, seed, variant)
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        json.dumps(settings.config_files(variant)),
    ]
    for key, value in settings.overrides_for(site, seed, variant).items():
        command += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    log = root / "protocol_run.log"
    with open(log, "w") as handle:
        result = subprocess.run(command, cwd=REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0 or not per_image.exists():
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"protocol run held-out {site}, seed {seed}, {variant} failed (log {log}):\n{tail}")
    return per_image


def read_rows(settings: ProtocolSettings) -> list[dict]:
    """All per-image rows of all finished runs, tagged with rotation, seed and variant."""
    rows = []
    for site, seed, variant in settings.jobs():
        path = settings.run_dir(site, seed, variant) / "runs/quick/report/per_image.csv"
        if not path.exists():
            continue
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                row.update({"held_out_site": site, "seed": seed, "variant": variant})
                for name in (*REPORT_METRICS, "roi_area_px"):
                    row[name] = float(row[name])
                rows.append(row)
    return rows


def _values(rows: list[dict], **match) -> dict[str, float]:
    """Metric values keyed by ``seed:case_id`` for rows matching ``match`` (the metric under ``metric``)."""
    metric = match.pop("metric")
    return {f"{r['seed']}:{r['case_id']}": r[metric] for r in rows if all(r[k] == v for k, v in match.items())}


def summarize_protocol(rows: list[dict], settings: ProtocolSettings) -> dict:
    """Pool the per-image rows into the protocol statistics.

    Returns:
        ``{"rotations": {site: {split: {metric: {...}}}}, "ablations": {...}}`` where each main
        entry holds phase means with 95 % CIs, the paired phase-2 minus phase-1 comparison and the
        seed spread of the relative change; each ablation entry compares a variant's phase 2 with
        the main method's phase 2 on the same images.
    """
    rotations: dict = {}
    for site in settings.sites:
        for split in ("val", "held_out"):
            for metric in REPORT_METRICS:
                base = {"variant": MAIN, "held_out_site": site, "split": split, "metric": metric}
                phase1 = _values(rows, phase="phase1", **base)
                phase2 = _values(rows, phase="phase2", **base)
                if not phase1 or not phase2:
                    continue
                per_seed = []
                for seed in settings.seeds:
                    p1 = [v for k, v in phase1.items() if k.startswith(f"{seed}:")]
                    p2 = [v for k, v in phase2.items() if k.startswith(f"{seed}:")]
                    if p1 and p2:
                        per_seed.append(100 * (np.mean(p2) - np.mean(p1)) / abs(np.mean(p1)))
                rotations.setdefault(site, {}).setdefault(split, {})[metric] = {
                    "phase1_mean": float(np.mean(list(phase1.values()))),
                    "phase1_ci": bootstrap_ci(list(phase1.values())),
                    "phase2_mean": float(np.mean(list(phase2.values()))),
                    "phase2_ci": bootstrap_ci(list(phase2.values())),
                    "phase2_minus_phase1": paired_comparison(phase1, phase2),
                    "relative_change_seed_spread": seed_spread(per_seed) if per_seed else None,
                }
    ablations: dict = {}
    for site in settings.sites:
        for variant in settings.variants:
            if variant == MAIN or (site not in settings.ablation_sites and not VARIANTS[variant].all_rotations):
                continue
            for split in ("val", "held_out"):
                for metric in REPORT_METRICS:
                    main = _values(rows, variant=MAIN, held_out_site=site, split=split, phase="phase2", metric=metric)
                    other = _values(
                        rows, variant=variant, held_out_site=site, split=split, phase="phase2", metric=metric
                    )
                    if main and other:
                        entry = ablations.setdefault(site, {}).setdefault(variant, {}).setdefault(split, {})
                        entry[metric] = paired_comparison(main, other)
    return {"rotations": rotations, "ablations": ablations}


def _run_parser(settings: ProtocolSettings, site: int, seed: int, variant: str = MAIN):
    """The parsed training config of one run (same data, split and network as the run itself)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(settings.config_files(variant))
    parser.update(settings.overrides_for(site, seed, variant))
    parser.parse()
    return parser


def _phase_networks(parser, root: Path) -> dict:
    """Best phase-1 and phase-2 networks of a run, on the CPU."""
    from bundle.utils.checkpoints import load_model_weights

    def fresh():
        return copy.deepcopy(parser.get_parsed_content("network_def")).cpu()

    return {
        "phase1": load_model_weights(fresh(), root / "models/phase1/model.pt"),
        "phase2": load_model_weights(fresh(), root / "models/model.pt"),
    }


def _finished_main_runs(settings: ProtocolSettings):
    """Yield ``(site, seed, run root, parsed config)`` of every finished run of the method."""
    for site in settings.sites:
        for seed in settings.seeds:
            root = settings.run_dir(site, seed, MAIN)
            if (root / "models/model.pt").exists():
                yield site, seed, root, _run_parser(settings, site, seed)


def jitter_study(settings: ProtocolSettings) -> dict:
    """ROI metrics under box perturbations for the main method of every rotation and seed.

    Returns:
        ``{site: {split: {perturbation: {phase: {metric: mean over seeds}}}}}``.
    """
    from bundle.evaluation.robustness import roi_jitter_metrics

    collected: dict = {}
    for site, _seed, root, parser in _finished_main_runs(settings):
        networks = _phase_networks(parser, root)
        for split, key in (("val", "report#val_dataloader"), ("held_out", "report#held_out_dataloader")):
            loader = parser.get_parsed_content(key)
            for phase, network in networks.items():
                for perturbation, metrics in roi_jitter_metrics(network, loader).items():
                    target = collected.setdefault(site, {}).setdefault(split, {}).setdefault(perturbation, {})
                    for metric, value in metrics.items():
                        target.setdefault(phase, {}).setdefault(metric, []).append(value)
    return {
        site: {
            split: {
                p: {phase: {m: float(np.mean(v)) for m, v in metrics.items()} for phase, metrics in phases.items()}
                for p, phases in perturbations.items()
            }
            for split, perturbations in splits.items()
        }
        for site, splits in collected.items()
    }


FIDELITY_FIGURES = ("measurable_pct", "abs_diff_median_mm", "abs_diff_p90_mm", "within_0.2mm_pct", "bias_mm")


def fidelity_study(settings: ProtocolSettings) -> dict:
    """NT measurement fidelity pooled over seeds from every run's own report (``report/fidelity.csv``).

    Each run measures the NT on its source-validation and held-out images, on the native original and on
    the reconstruction mapped back to native geometry (:mod:`bundle.evaluation.fidelity`).

    Returns:
        ``{"rows": [...], "summary": {variant: {site: {split: {planes: {phase: figures}}}}}}`` (planes:
        ``standard_planes`` or ``all_planes``): the figures of
        :func:`bundle.evaluation.fidelity.fidelity_summary` plus 95 % bootstrap CIs (``*_ci``) of the median and p90
        absolute difference, the share within 0.2 mm and the bias, over all images of all seeds.
    """
    from bundle.evaluation.fidelity import WITHIN_MM, fidelity_summary

    rows = []
    for site, seed, variant in settings.jobs():
        path = settings.run_dir(site, seed, variant) / "runs/quick/report/fidelity.csv"
        if not path.exists():
            continue
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                for key in ("nt_true_mm", "nt_original_mm", "nt_recon_mm"):
                    row[key] = float(row[key]) if row[key] not in ("", "None") else None
                rows.append({**row, "held_out_site": site, "seed": seed, "variant": variant})
    summary: dict = {}
    groups = sorted({(r["variant"], r["held_out_site"], r["split"], r["phase"]) for r in rows})
    for (variant, site, split, phase), planes in itertools.product(groups, ("standard_planes", "all_planes")):
        subset = [
            r
            for r in rows
            if (r["variant"], r["held_out_site"], r["split"], r["phase"]) == (variant, site, split, phase)
            and (planes == "all_planes" or r.get("standard_plane") in ("True", "", None))
        ]
        if not subset:
            continue
        figures = fidelity_summary(subset)
        diff = [
            r["nt_recon_mm"] - r["nt_original_mm"]
            for r in subset
            if None not in (r["nt_recon_mm"], r["nt_original_mm"])
        ]
        if len(diff) > 1:
            absolute = np.abs(diff)
            figures["abs_diff_median_mm_ci"] = bootstrap_ci(absolute, statistic=np.median)
            figures["abs_diff_p90_mm_ci"] = bootstrap_ci(
                absolute, statistic=lambda x, axis: np.percentile(x, 90, axis=axis)
            )
            figures["within_0.2mm_pct_ci"] = tuple(100 * v for v in bootstrap_ci((absolute <= WITHIN_MM).astype(float)))
            figures["bias_mm_ci"] = bootstrap_ci(diff)
        by_planes = summary.setdefault(variant, {}).setdefault(site, {}).setdefault(split, {})
        by_planes.setdefault(planes, {})[phase] = figures
    return {"rows": rows, "summary": summary}


PAPER_FORM = (("psnr", "PSNR (dB)", False), ("roi_mae", "ROI MAE", True), ("roi_edge_mae", "ROI Edge-MAE", True))
SPLIT_NAMES = {"val": "source validation", "held_out": "held-out site"}


def _fmt_ci(mean: float, ci: tuple[float, float]) -> str:
    return f"{mean:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"


def _fmt_p(p: float) -> str:
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _row(*cells: object) -> str:
    """A Markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _header(*names: str) -> list[str]:
    return [_row(*names), _row(*["---"] * len(names))]


def _rotation_tables(summary: dict, names: dict) -> list[str]:
    lines = ["## Phase 2 vs phase 1 in the paper's form", ""]
    lines += _header(
        "held out", "split", "metric", "phase 1", "phase 2", "change [95 % CI]", "relative", "p", "seed sd"
    )
    for site, splits in summary["rotations"].items():
        for split, metrics in splits.items():
            for metric, label, _ in PAPER_FORM:
                m = metrics[metric]
                c = m["phase2_minus_phase1"]
                spread = m["relative_change_seed_spread"]
                change = f"{c['mean_difference']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"
                seed_sd = "-" if spread is None else f"{spread['std']:.2f} pp"
                lines.append(
                    _row(
                        names.get(site, site), SPLIT_NAMES[split], label, f"{m['phase1_mean']:.4f}",
                        f"{m['phase2_mean']:.4f}", change, f"{c['relative_pct']:+.2f} %", _fmt_p(c["p_value"]), seed_sd,
                    )
                )  # fmt: skip
    lines += [
        "",
        "Paper (phase 2 vs 1): PSNR +0.27 dB val / +0.29 dB held-out; ROI MAE -8.87 % / -6.43 %; "
        "ROI Edge-MAE -11.10 % / -4.90 %.",
        "",
        "## All metrics with confidence intervals",
        "",
    ]
    for site, splits in summary["rotations"].items():
        for split, metrics in splits.items():
            lines += [f"### Held out {names.get(site, site)}, {SPLIT_NAMES[split]}", ""]
            lines += _header("metric", "phase 1 mean [95 % CI]", "phase 2 mean [95 % CI]", "relative", "p")
            for metric, m in metrics.items():
                c = m["phase2_minus_phase1"]
                lines.append(
                    _row(
                        metric, _fmt_ci(m["phase1_mean"], m["phase1_ci"]), _fmt_ci(m["phase2_mean"], m["phase2_ci"]),
                        f"{c['relative_pct']:+.2f} %", _fmt_p(c["p_value"]),
                    )
                )  # fmt: skip
            lines.append("")
    return lines


def _ablation_table(summary: dict, names: dict) -> list[str]:
    if not summary["ablations"]:
        return []
    lines = ["## Ablations (same budget): a variant's phase 2 vs the method's phase 2, same images", ""]
    lines += _header("held out", "variant", "split", "PSNR change (dB)", "ROI MAE", "ROI Edge-MAE", "p (ROI MAE)")
    for site, variants in summary["ablations"].items():
        for variant, splits in variants.items():
            for split, m in splits.items():
                lines.append(
                    _row(
                        names.get(site, site), f"{variant}: {VARIANTS[variant].description}", SPLIT_NAMES[split],
                        f"{m['psnr']['mean_difference']:+.3f}", f"{m['roi_mae']['relative_pct']:+.2f} %",
                        f"{m['roi_edge_mae']['relative_pct']:+.2f} %", _fmt_p(m["roi_mae"]["p_value"]),
                    )
                )  # fmt: skip
    return [*lines, "", "Negative relative changes: the variant has lower error than the method.", ""]


def _jitter_table(jitter: dict, names: dict) -> list[str]:
    if not jitter:
        return []
    lines = [
        "## ROI jitter robustness",
        "",
        "The method's ROI metrics scored on NT boxes shifted (mean of 4 directions) or scaled about their "
        "centre, in canvas pixels. Drop = phase-2 Edge-MAE on the perturbed box minus on the exact box. "
        "Boxes moved onto a flat area (the padding) have no defined Edge-MAE and are left out of it (flat boxes).",
        "",
    ]
    lines += _header(
        "held out", "split", "box", "phase 1 ROI MAE", "phase 2 ROI MAE", "phase-2 gain", "phase 2 Edge-MAE", "drop",
        "flat boxes",
    )  # fmt: skip
    for site, splits in jitter.items():
        for split, perturbations in splits.items():
            exact = perturbations["exact"]["phase2"]["roi_edge_mae"]
            for name, phases in perturbations.items():
                p1, p2 = phases["phase1"], phases["phase2"]
                gain = 100 * (p2["roi_mae"] - p1["roi_mae"]) / p1["roi_mae"]
                lines.append(
                    _row(
                        names.get(site, site), SPLIT_NAMES[split], name, f"{p1['roi_mae']:.4f}", f"{p2['roi_mae']:.4f}",
                        f"{gain:+.2f} %", f"{p2['roi_edge_mae']:.4f}", f"{p2['roi_edge_mae'] - exact:+.4f}",
                        f"{p2.get('flat_boxes_pct', 0.0):.0f} %",
                    )
                )  # fmt: skip
    return [*lines, ""]


def _fidelity_table(fidelity: dict, names: dict) -> list[str]:
    if not fidelity.get("summary"):
        return []
    lines = [
        "## NT measurement fidelity: dual-view vs the paper's single-view model",
        "",
        "The NT is measured automatically in the native NT box "
        "(`bundle.evaluation.nt_measure.measure_nt_in_roi`) on the "
        "original and on the reconstruction mapped back to native geometry (the dual-view model's zoom view "
        "through the zoom inverse, the paper model's canvas through the letterbox inverse); all images of all "
        "seeds, 95 % bootstrap CIs in brackets. Measurable = share of measurable originals also measurable "
        "on the reconstruction; differences are NT(recon) - NT(original).",
        "",
    ]
    lines += _header(
        "held out", "split", "planes", "model", "phase", "measurable", "abs diff median (mm)", "abs diff p90 (mm)",
        "within 0.2 mm", "bias (mm)", "vs exact NT, MAE (mm)",
    )  # fmt: skip

    def cell(figures: dict, key: str, fmt: str) -> str:
        ci = figures.get(f"{key}_ci")
        value = fmt.format(figures[key])
        return value if ci is None else f"{value} [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"

    for variant, sites in fidelity["summary"].items():
        for site, splits in sites.items():
            for split, by_planes in splits.items():
                for planes, phases in by_planes.items():
                    for phase, f in phases.items():
                        lines.append(
                            _row(
                                names.get(site, site), SPLIT_NAMES.get(split, split), planes.replace("_", " "),
                                variant, phase,
                                f"{f['measurable_pct']:.1f} % of {f['n']}", cell(f, "abs_diff_median_mm", "{:.3f}"),
                                cell(f, "abs_diff_p90_mm", "{:.3f}"), cell(f, "within_0.2mm_pct", "{:.1f}"),
                                cell(f, "bias_mm", "{:+.3f}"), f"{f['recon_mae_vs_truth_mm']:.3f}",
                            )
                        )  # fmt: skip
    return [*lines, ""]


def protocol_markdown(
    settings: ProtocolSettings,
    summary: dict,
    jitter: dict,
    fidelity: dict,
    site_names: dict,
    probes: dict | None = None,
) -> str:
    """The protocol report a person reads first."""
    from bundle.protocol.probes import probe_table

    rotations = ", ".join(site_names.get(s, str(s)) for s in settings.sites)
    lines = [
        "# Evaluation protocol report",
        "",
        f"Rotations (held-out site): {rotations}; seeds {settings.seeds}; {settings.phase1_epochs} + "
        f"{settings.phase2_epochs} epochs per run. Means over all images of all seeds with 95 % bootstrap CIs; "
        "phase 2 - phase 1 paired per image with a two-sided Wilcoxon signed-rank test; seed sd = standard "
        "deviation over seeds of the per-seed relative change.",
        "",
        *_rotation_tables(summary, site_names),
        *_ablation_table(summary, site_names),
        *_jitter_table(jitter, site_names),
        *_fidelity_table(fidelity, site_names),
        *probe_table(probes or {}, site_names),
        "## Figures",
        "",
        "![metric distributions](distributions.png)",
        "",
        "![phase-2 gain vs ROI size](gain_vs_roi_size.png)",
        "",
        "Reconstruction grids of every run: "
        "`runs/heldout{site}_seed{seed}/roi_cae/runs/quick/report/reconstructions.png`.",
        "",
    ]
    return "\n".join(lines)


def protocol_figures(rows: list[dict], report_dir: Path, site_names: dict) -> None:
    """Metric distributions per site and phase, and the phase-2 gain against the ROI size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bundle.utils.atomic import atomic_path

    main = [r for r in rows if r["variant"] == MAIN]
    sites = sorted({int(r["site"]) for r in main})
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, metric in zip(axes, ("psnr", "roi_mae", "roi_edge_mae"), strict=True):
        data, labels = [], []
        for site in sites:
            for phase in ("phase1", "phase2"):
                data.append([r[metric] for r in main if int(r["site"]) == site and r["phase"] == phase])
                labels.append(f"{site_names.get(site, site)}\n{phase}")
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=6)
        ax.set_title(metric)
    fig.tight_layout()
    with atomic_path(report_dir / "distributions.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)

    by_key = {}
    for r in main:
        by_key.setdefault((r["held_out_site"], r["seed"], r["split"], r["case_id"]), {})[r["phase"]] = r
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for split, colour in (("val", "tab:blue"), ("held_out", "tab:red")):
        pairs = [v for k, v in by_key.items() if k[2] == split and len(v) == 2]
        area = [p["phase1"]["roi_area_px"] for p in pairs]
        gain = [100 * (p["phase2"]["roi_mae"] - p["phase1"]["roi_mae"]) / p["phase1"]["roi_mae"] for p in pairs]
        ax.scatter(area, gain, s=6, alpha=0.5, color=colour, label=SPLIT_NAMES[split])
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("ROI area (canvas pixels)")
    ax.set_ylabel("phase-2 ROI MAE change (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(report_dir / "gain_vs_roi_size.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def run_protocol(settings: ProtocolSettings, report_only: bool = False) -> Path:
    """Run every job (skipping finished ones) and write ``output_dir/report``.

    Args:
        settings: what to run.
        report_only: only aggregate runs that already finished.

    Returns:
        path of ``report/protocol.md``.
    """
    from bundle.protocol.probes import probe_study
    from bundle.training.workflow import datalist_path
    from bundle.utils.atomic import atomic_write_csv, atomic_write_json, atomic_write_text

    unknown = [v for v in settings.variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    if MAIN not in settings.variants:
        settings.variants.insert(0, MAIN)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    jobs = settings.jobs()
    if not report_only:
        for number, (site, seed, variant) in enumerate(jobs, start=1):
            print(f"protocol: run {number}/{len(jobs)}: held-out site {site}, seed {seed}, {variant}", flush=True)
            train_run(settings, site, seed, variant)
    rows = read_rows(settings)
    if not rows:
        raise RuntimeError(f"no finished runs under {settings.output_dir / 'runs'}; run without --report-only first")
    print("protocol: aggregating, ROI-jitter, measurement-fidelity and latent-probe studies ...", flush=True)
    summary = summarize_protocol(rows, settings)
    jitter = jitter_study(settings)
    fidelity = fidelity_study(settings)
    probes = probe_study(settings, _finished_main_runs(settings))
    sites_map = json.loads(datalist_path(settings.dataset_dir).read_text()).get("sites", {})
    site_names = {int(k): v for k, v in sites_map.items()}
    report_dir = settings.output_dir / "report"
    atomic_write_json(
        report_dir / "protocol.json",
        {
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in settings.__dict__.items()},
            "summary": summary,
            "jitter": jitter,
            "fidelity": fidelity["summary"],
            "probes": probes,
        },
    )
    columns = ["variant", "held_out_site", "seed", "phase", "split", "case_id", "site", "roi_area_px", *REPORT_METRICS]
    lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]
    atomic_write_text(report_dir / "per_image.csv", "\n".join(lines) + "\n")
    if fidelity["rows"]:
        atomic_write_csv(report_dir / "fidelity.csv", fidelity["rows"], list(fidelity["rows"][0]))
    protocol_figures(rows, report_dir, site_names)
    markdown = report_dir / "protocol.md"
    atomic_write_text(markdown, protocol_markdown(settings, summary, jitter, fidelity, site_names, probes))
    print(
        f"protocol: report written to {report_dir} (protocol.md, protocol.json, per_image.csv, fidelity.csv, figures)"
    )
    return markdown
