"""Protocol runs: train one run in a subprocess, and read back what the finished runs wrote."""

from __future__ import annotations

import copy
import csv
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bundle.protocol.variants import MAIN, REPORT_METRICS, VARIANTS, ProtocolSettings, RunPaths
from bundle.utils.paths import REPO_ROOT, load_config


def seed_phase1_from_main(settings: ProtocolSettings, site: int, seed: int, variant: str) -> None:
    """Give a shares-phase-1 variant the main run's finished phase 1, so only phase 2 trains."""
    main, target = settings.run_paths(site, seed, MAIN), settings.run_paths(site, seed, variant)
    marker = "phase1_complete.json"
    if (target.output / marker).exists():
        return
    shutil.copytree(main.models / "phase1", target.models / "phase1", dirs_exist_ok=True)
    target.output.mkdir(parents=True, exist_ok=True)
    shutil.copy(main.output / marker, target.output / marker)


def train_run(settings: ProtocolSettings, site: int, seed: int, variant: str) -> Path:
    """Train and report one run in a subprocess; skipped when its report exists.

    Args:
        settings: what the protocol runs.
        site: held-out site of the run.
        seed: training seed.
        variant: a name from :data:`~bundle.protocol.variants.VARIANTS`.

    Returns:
        the run's ``per_image.csv``.

    Raises:
        RuntimeError: when the run fails (the end of its log is in the message).
    """
    root = settings.run_dir(site, seed, variant)
    per_image = settings.run_paths(site, seed, variant).output / "report/per_image.csv"
    if per_image.exists():
        return per_image
    root.mkdir(parents=True, exist_ok=True)
    if VARIANTS[variant].shares_phase1:
        seed_phase1_from_main(settings, site, seed, variant)
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


def read_csv_rows(settings: ProtocolSettings, name: str) -> Iterator[dict]:
    """Rows of ``report/<name>`` of every finished run, tagged with ``held_out_site``, ``seed`` and ``variant``.

    Args:
        settings: what the protocol runs.
        name: a CSV file of the run's ``report/`` folder (``per_image.csv``, ``fidelity.csv``).

    Returns:
        an iterator over the rows (values as read, strings).
    """
    for site, seed, variant in settings.jobs():
        path = settings.run_paths(site, seed, variant).output / "report" / name
        if not path.exists():
            continue
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                yield {**row, "held_out_site": site, "seed": seed, "variant": variant}


def read_rows(settings: ProtocolSettings) -> list[dict]:
    """All per-image rows of all finished runs, tagged with rotation, seed and variant (metrics as floats)."""
    numeric = (*REPORT_METRICS, "roi_area_px")
    return [{**row, **{k: float(row[k]) for k in numeric}} for row in read_csv_rows(settings, "per_image.csv")]


def run_parser(settings: ProtocolSettings, site: int, seed: int, variant: str = MAIN):
    """The parsed training config of one run (same data, split and network as the run itself)."""
    return load_config(settings.config_files(variant), settings.overrides_for(site, seed, variant), parse=True)


def phase_networks(parser, paths: RunPaths) -> dict:
    """Best phase-1 and phase-2 networks of a run, on the CPU.

    Args:
        parser: the run's parsed config (:func:`run_parser`).
        paths: the run's folders.

    Returns:
        ``{"phase1": network, "phase2": network}``.
    """
    from bundle.utils.checkpoints import load_model_weights

    def fresh():
        return copy.deepcopy(parser.get_parsed_content("network_def")).cpu()

    return {
        "phase1": load_model_weights(fresh(), paths.models / "phase1/model.pt"),
        "phase2": load_model_weights(fresh(), paths.models / "model.pt"),
    }


def finished_main_runs(settings: ProtocolSettings) -> Iterator[tuple[int, int, RunPaths, object]]:
    """Yield ``(site, seed, run folders, parsed config)`` of every finished run of the method."""
    for site in settings.sites:
        for seed in settings.seeds:
            paths = settings.run_paths(site, seed, MAIN)
            if (paths.models / "model.pt").exists():
                yield site, seed, paths, run_parser(settings, site, seed)
