"""The evaluation protocol (SPEC 5): every leave-one-site-out rotation, several seeds, ablations.

``python -m bundle protocol`` trains each (rotation, seed, variant) with the bundle's own training
workflow in a subprocess (a run whose report exists is skipped, so the command resumes), then
pools the per-image results into one report: means with bootstrap CIs, paired phase-2 minus
phase-1 differences with Wilcoxon p-values, relative changes in the paper's form, seed spread,
ablations against the main method, ROI-jitter robustness and NT measurement fidelity.
"""

from __future__ import annotations

from pathlib import Path

from bundle.data.datalist import site_names
from bundle.protocol.probes import probe_study
from bundle.protocol.runs import finished_main_runs, read_rows, train_run
from bundle.protocol.studies import (
    agreement_study,
    fidelity_study,
    jitter_study,
    localization_study,
    summarize_protocol,
)
from bundle.protocol.variants import MAIN, REPORT_METRICS, VARIANTS, ProtocolSettings
from bundle.protocol.writeup import fidelity_figure, protocol_figures, protocol_markdown
from bundle.training.workflow import datalist_path
from bundle.utils.atomic import atomic_write_csv, atomic_write_json, atomic_write_text

PER_IMAGE_COLUMNS = (
    "variant",
    "held_out_site",
    "seed",
    "phase",
    "split",
    "case_id",
    "site",
    "roi_area_px",
    *REPORT_METRICS,
)


def run_protocol(settings: ProtocolSettings, report_only: bool = False) -> Path:
    """Run every job (skipping finished ones) and write ``output_dir/report``.

    Args:
        settings: what to run.
        report_only: only aggregate runs that already finished.

    Returns:
        path of ``report/protocol.md``.

    Raises:
        ValueError: for an unknown variant.
        RuntimeError: when a run fails, or when no run has finished (``report_only``).
    """
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
    agreement = agreement_study(settings, fidelity["rows"])
    agreement["localization"] = localization_study(settings)
    probes = probe_study(settings, finished_main_runs(settings))
    names = site_names(datalist_path(settings.dataset_dir))
    report_dir = settings.output_dir / "report"
    atomic_write_json(
        report_dir / "protocol.json",
        {
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in settings.__dict__.items()},
            "summary": summary,
            "jitter": jitter,
            "fidelity": fidelity["summary"],
            "nt_agreement": agreement,
            "probes": probes,
        },
    )
    atomic_write_csv(report_dir / "per_image.csv", rows, list(PER_IMAGE_COLUMNS))
    if fidelity["rows"]:
        atomic_write_csv(report_dir / "fidelity.csv", fidelity["rows"], list(fidelity["rows"][0]))
    protocol_figures(rows, report_dir, names)
    nt_figure = fidelity_figure(fidelity["rows"], report_dir, names)
    markdown = report_dir / "protocol.md"
    atomic_write_text(
        markdown,
        protocol_markdown(settings, summary, jitter, fidelity, names, probes, nt_figure is not None, agreement),
    )
    print(
        f"protocol: report written to {report_dir} (protocol.md, protocol.json, per_image.csv, fidelity.csv, figures)"
    )
    return markdown
