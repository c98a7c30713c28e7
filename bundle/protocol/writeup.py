"""The protocol's write-up: ``protocol.md`` tables and the report figures."""

from __future__ import annotations

from pathlib import Path

from bundle.protocol.probes import probe_table
from bundle.protocol.studies import POOLED
from bundle.protocol.variants import MAIN, VARIANTS, ProtocolSettings

PAPER_FORM = (("psnr", "PSNR (dB)", False), ("roi_mae", "ROI MAE", True), ("roi_edge_mae", "ROI Edge-MAE", True))
SPLIT_NAMES = {"val": "source validation", "held_out": "held-out site"}


def _fmt_ci(mean: float, ci: tuple[float, float]) -> str:
    return f"{mean:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"


def _fmt_change(comparison: dict, digits: int = 3) -> str:
    """A paired comparison's mean difference and its 95 % CI."""
    return "{0:+.{3}f} [{1:+.{3}f}, {2:+.{3}f}]".format(
        comparison["mean_difference"], comparison["ci_low"], comparison["ci_high"], digits
    )


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
                change = _fmt_change(c, 4)
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
    lines += _header(
        "held out", "variant", "split", "PSNR change (dB) [95 % CI]", "ROI MAE", "ROI Edge-MAE", "p (ROI MAE)"
    )
    for site, variants in summary["ablations"].items():
        for variant, splits in variants.items():
            for split, m in splits.items():
                lines.append(
                    _row(
                        names.get(site, site), f"{variant}: {VARIANTS[variant].description}", SPLIT_NAMES[split],
                        _fmt_change(m["psnr"]),
                        f"{m['roi_mae']['relative_pct']:+.2f} %",
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
        "on the reconstruction; differences are NT(recon) - NT(original). The last rows of each model pool "
        "every rotation. Targets (held-out site, standard planes, phase 2): measurable >= 98 %, median <= 0.10 mm, "
        "p90 <= 0.25 mm, bias within +-0.05 mm.",
        "",
    ]
    names = {**names, POOLED: "all rotations"}
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


def _localization_table(localization: dict, names: dict) -> list[str]:
    """The NT localiser on each rotation's held-out site (the given box hidden from it)."""
    from bundle.evaluation.localization import localization_table

    if not localization:
        return []
    lines = [
        "## NT localiser on the held-out site of each rotation",
        "",
        "Boxes predicted with the given box hidden; mean over seeds. Targets (standard planes): IoU >= 0.5 on "
        ">= 95 %, centre error median <= 0.5 mm. NT-free views: the largest strip of each image beside its box.",
        "",
        *localization_table(localization, "held out", lambda site: names.get(site, site)),
    ]
    return [*lines, ""]


def _agreement_table(agreement: dict, names: dict) -> list[str]:
    """The Bland-Altman section: held-out standard planes per rotation, nulls and human anchors."""
    from bundle.evaluation.agreement import agreement_markdown

    lines = _localization_table(agreement.get("localization") or {}, names)
    if not agreement.get("rows"):
        return lines
    constants = ", ".join(f"{names.get(s, s)} {v:.3f} mm" for s, v in agreement["constant_nt_mm"].items())
    return [
        *lines,
        "## NT agreement (Bland-Altman), held-out site of each rotation, standard planes",
        "",
        "NT(reconstruction) - NT(original), all seeds of a rotation together; bias = mean difference, 95 % "
        "limits of agreement = bias +- 1.96 SD. Null baselines on the same originals: a constant NT (each "
        f"rotation's training-originals median: {constants or 'not recorded'}) and phase 2's NT shuffled within "
        "the site. `phase2, predicted boxes`: the NT localiser's boxes instead of the given ones.",
        "",
        *agreement_markdown(agreement["rows"], lambda s: "all rotations" if s == "all" else names.get(s, f"site {s}")),
        "",
    ]


def protocol_markdown(
    settings: ProtocolSettings,
    summary: dict,
    jitter: dict,
    fidelity: dict,
    site_names: dict,
    probes: dict | None = None,
    nt_figure: bool = False,
    agreement: dict | None = None,
) -> str:
    """The protocol report a person reads first (``nt_figure``: link ``nt_fidelity.png``, :func:`fidelity_figure`)."""
    example = settings.run_paths(settings.sites[0], settings.seeds[0], MAIN).output / "report/reconstructions.png"
    try:
        example = example.relative_to(settings.output_dir)
    except ValueError:  # an output_dir override outside the protocol folder
        pass
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
        *_agreement_table(agreement or {}, site_names),
        *probe_table(probes or {}, site_names),
        "## Figures",
        "",
        "![metric distributions](distributions.png)",
        "",
        "![phase-2 gain vs ROI size](gain_vs_roi_size.png)",
        "",
        *(["![NT on reconstructions vs originals](nt_fidelity.png)", ""] if nt_figure else []),
        f"Reconstruction grids of every run: `report/reconstructions.png` in its output folder, e.g. `{example}`.",
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


def fidelity_figure(rows: list[dict], report_dir: Path, site_names: dict) -> Path | None:
    """NT on the reconstruction against NT on the original: held-out standard planes, phase 2, one panel per rotation.

    Args:
        rows: the fidelity rows of :func:`bundle.protocol.studies.fidelity_study` (lengths in mm, None
            where no band was found).
        report_dir: where ``nt_fidelity.png`` is written.
        site_names: site index -> name.

    Returns:
        the figure's path, or None when no row qualifies.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bundle.evaluation.fidelity import WITHIN_MM, is_standard_plane
    from bundle.utils.atomic import atomic_path

    chosen = [
        r
        for r in rows
        if r["split"] == "held_out"
        and r["phase"] == "phase2"
        and is_standard_plane(r)
        and None not in (r["nt_original_mm"], r["nt_recon_mm"])
    ]
    if not chosen:
        return None
    sites = sorted({int(r["held_out_site"]) for r in chosen})
    variants = sorted({r["variant"] for r in chosen}, key=lambda v: v != MAIN)
    top = max(max(r["nt_original_mm"], r["nt_recon_mm"]) for r in chosen)
    top = min(top, 2 * max(r["nt_original_mm"] for r in chosen)) * 1.05
    fig, axes = plt.subplots(1, len(sites), figsize=(4 * len(sites), 4), squeeze=False)
    for ax, site in zip(axes[0], sites, strict=True):
        line = [0.0, top]
        ax.fill_between(line, [v - WITHIN_MM for v in line], [v + WITHIN_MM for v in line], color="0.9")
        ax.plot(line, line, color="black", linewidth=0.6)
        for variant in variants:
            mine = [r for r in chosen if int(r["held_out_site"]) == site and r["variant"] == variant]
            if mine:
                ax.scatter(
                    [min(r["nt_original_mm"], top) for r in mine], [min(r["nt_recon_mm"], top) for r in mine],
                    s=6, alpha=0.5,
                    label=f"{variant} ({len(mine)} measured)",
                )  # fmt: skip
        ax.set(xlim=(0, top), ylim=(0, top), xlabel="NT on the original (mm)", ylabel="NT on the reconstruction (mm)")
        ax.set_title(f"held out {site_names.get(site, site)}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(
        f"held-out standard planes, phase 2, all seeds (grey: within {WITHIN_MM} mm; larger values drawn at the edge)",
        fontsize=9,
    )
    fig.tight_layout()
    path = report_dir / "nt_fidelity.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
