"""Protocol statistics and studies: pooled phase comparisons, ablations, ROI jitter, NT fidelity."""

from __future__ import annotations

import itertools
import json

import numpy as np
from bundle.evaluation.statistics import bootstrap_ci, paired_comparison, seed_spread
from bundle.protocol.runs import finished_main_runs, phase_networks, read_csv_rows
from bundle.protocol.variants import MAIN, REPORT_METRICS, VARIANTS, ProtocolSettings


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


def jitter_study(settings: ProtocolSettings) -> dict:
    """ROI metrics under box perturbations for the main method of every rotation and seed.

    Returns:
        ``{site: {split: {perturbation: {phase: {metric: mean over seeds}}}}}``.
    """
    from bundle.evaluation.robustness import roi_jitter_metrics

    collected: dict = {}
    for site, _seed, paths, parser in finished_main_runs(settings):
        networks = phase_networks(parser, paths)
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


POOLED = "all"  # the site key of the fidelity figures pooled over every rotation
FIDELITY_FIGURES = ("measurable_pct", "abs_diff_median_mm", "abs_diff_p90_mm", "within_0.2mm_pct", "bias_mm")


def _pooled_last(group: tuple) -> tuple:
    """Sort key of (variant, site, split, phase): sites in order, the pooled entry after them."""
    variant, site, split, phase = group
    return variant, site == POOLED, -1 if site == POOLED else site, split, phase


def fidelity_study(settings: ProtocolSettings) -> dict:
    """NT measurement fidelity pooled over seeds from every run's own report (``report/fidelity.csv``).

    Each run measures the NT on its source-validation and held-out images, on the native original and on
    the reconstruction mapped back to native geometry (:mod:`bundle.evaluation.fidelity`).

    Returns:
        ``{"rows": [...], "summary": {variant: {site: {split: {planes: {phase: figures}}}}}}`` (planes:
        ``standard_planes`` or ``all_planes``): the figures of
        :func:`bundle.evaluation.fidelity.fidelity_summary` plus 95 % bootstrap CIs (``*_ci``) of the median and p90
        absolute difference, the share within 0.2 mm and the bias, over all images of all seeds. With
        more than one rotation, site ``"all"`` (:data:`POOLED`) pools the images of every rotation.
    """
    from bundle.evaluation.fidelity import WITHIN_MM, fidelity_summary, is_standard_plane

    lengths = ("nt_true_mm", "nt_original_mm", "nt_recon_mm")
    rows = [
        {**row, **{k: float(row[k]) if row[k] not in ("", "None") else None for k in lengths}}
        for row in read_csv_rows(settings, "fidelity.csv")
    ]
    summary: dict = {}
    tagged = list(rows)
    if len({r["held_out_site"] for r in rows}) > 1:  # every rotation's images together, under "all"
        tagged += [{**r, "held_out_site": POOLED} for r in rows]
    groups = sorted({(r["variant"], r["held_out_site"], r["split"], r["phase"]) for r in tagged}, key=_pooled_last)
    for (variant, site, split, phase), planes in itertools.product(groups, ("standard_planes", "all_planes")):
        subset = [
            r
            for r in tagged
            if (r["variant"], r["held_out_site"], r["split"], r["phase"]) == (variant, site, split, phase)
            and (planes == "all_planes" or is_standard_plane(r))
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


def agreement_study(settings: ProtocolSettings, rows: list[dict]) -> dict:
    """Bland-Altman agreement on the held-out standard planes of the main method, per rotation and pooled.

    Every rotation's phase 1, phase 2 and phase 2 with the localiser's boxes (when the runs have them),
    beside the null baselines (:func:`bundle.evaluation.agreement.agreement_rows`): a constant NT per
    rotation (the mean over seeds of each run's training-originals median, ``constant_nt_mm`` in its
    ``metrics.json``) and shuffled pairs within the site.

    Args:
        settings: what the protocol ran.
        rows: the fidelity rows of :func:`fidelity_study`.

    Returns:
        ``{"constant_nt_mm": {site: mm}, "rows": [...]}``.
    """
    from bundle.evaluation.agreement import agreement_rows
    from bundle.evaluation.fidelity import is_standard_plane
    from bundle.evaluation.report import PREDICTED_PHASE

    held = [r for r in rows if r["variant"] == MAIN and r["split"] == "held_out" and is_standard_plane(r)]
    methods = {phase: [r for r in held if r["phase"] == phase] for phase in ("phase2", "phase1", PREDICTED_PHASE)}
    constants: dict[int, float] = {}
    for site in settings.sites:
        values = []
        for seed in settings.seeds:
            path = settings.run_paths(site, seed, MAIN).output / "report" / "metrics.json"
            if path.exists():
                value = json.loads(path.read_text()).get("constant_nt_mm")
                values += [value] if value is not None else []
        if values:
            constants[int(site)] = float(np.mean(values))
    table = agreement_rows({k: v for k, v in methods.items() if v}, constants or None)
    return {"constant_nt_mm": constants, "rows": table}


def localization_study(settings: ProtocolSettings) -> dict:
    """The NT localiser's figures on each rotation's held-out site, from every main run's ``metrics.json``.

    Returns:
        ``{site: {planes: figures}}`` (planes: ``standard_planes``, ``all_planes``), each figure the mean
        over the rotation's seeds (:func:`bundle.evaluation.localization.localization_summary`); rotations
        whose runs have no localiser are left out.
    """
    out: dict = {}
    for site in settings.sites:
        runs = []
        for seed in settings.seeds:
            path = settings.run_paths(site, seed, MAIN).output / "report" / "metrics.json"
            if path.exists():
                held = json.loads(path.read_text()).get("localization", {}).get("held_out")
                runs += [held] if held else []
        if runs:
            out[int(site)] = {
                planes: {key: float(np.mean([run[planes][key] for run in runs])) for key in runs[0][planes]}
                for planes in runs[0]
            }
    return out
