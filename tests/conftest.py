"""Shared fixtures: one small synthetic dataset per test session (seconds to make)."""

from __future__ import annotations

import os

import pytest
import torch
from bundle.data.synthetic.dataset import write_synthetic_dataset

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers share the cores: one thread each, for this process and the commands it starts (they inherit the
    # environment). Tiny tensors gain nothing from a second thread; two workers of two threads each slowed the
    # suite by oversubscription (user time 15 min against 9).
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """Six 128x128-bounded images per site in PNG, DICOM and NIfTI, with label maps."""
    root = tmp_path_factory.mktemp("synthetic")
    path = write_synthetic_dataset(
        root, per_site=6, size=(128, 128), formats=("png", "dcm", "nii"), masks=True, progress=False
    )
    return path


def error_messages(error: BaseException) -> list[str]:
    """The messages of ``error`` and its causes (MONAI wraps errors raised inside config expressions)."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return messages


TINY_TRAINING = {
    "synthetic#generate": True,  # tests train in temporary folders, away from the default data/synthetic
    "synthetic#per_site": 6,
    "synthetic#size": [64, 64],
    "synthetic#workers": 1,
    "canvas_size": 64,
    "roi_canvas_size": 32,
    "network_widths": [8, 16, 16, 32, 32],
    "roi_network_widths": [8, 16, 16, 32],
    "batch_size": 4,
    "phase1_epochs": 2,
    "phase2_epochs": 2,
    "calibration_batches": 2,
    # the NT localiser adds ~5 s to a tiny run: on for the shared trained fixtures and the clean checkout only
    "localizer": False,
    "localizer_epochs": 2,
    "localizer_refine_epochs": 2,
    "cache_workers": 0,
    # the report's OOD check on fresh images: a handful at the tiny size instead of 60 native ones
    "scoring#check_data#per_site": 2,
    "scoring#check_data#size": [64, 64],
}


@pytest.fixture
def tiny_training():
    """Training overrides for a run of a few seconds: 6 images per site at 64 px, two epochs per phase."""
    return dict(TINY_TRAINING)


def _train_tiny(root, **extra) -> tuple:
    from pathlib import Path

    from monai.bundle import ConfigWorkflow

    config = str(Path(__file__).resolve().parents[1] / "configs" / "train.json")
    settings = {
        "bundle_root": str(root),
        "dataset_dir": str(root / "data"),
        **TINY_TRAINING,
        "synthetic#per_site": 10,
        **extra,
    }
    # MONAI's default run id ("run"), as the model zoo's unit-test template calls it; it runs ``training``.
    workflow = ConfigWorkflow(config_file=config, workflow_type="train", **settings)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return root, settings


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
    """A finished tiny training run of the default dual-view model (10 images per site, 64 px): ``(root, settings)``.

    Shared by the export, probe, inference and MONAI Label tests; they only read its models and data.
    """
    return _train_tiny(tmp_path_factory.mktemp("trained"), localizer=True)


@pytest.fixture(scope="session")
def tiny_trained_paper(tmp_path_factory):
    """The same tiny run with ``model: paper`` (single view): for box-free inputs such as plain image folders."""
    return _train_tiny(tmp_path_factory.mktemp("trained_paper"), model="paper", localizer=True)


#: architecture settings of ``tiny_trained`` that exports and inference must repeat
TINY_ARCH = {
    key: TINY_TRAINING[key] for key in ("canvas_size", "roi_canvas_size", "network_widths", "roi_network_widths")
}
#: the same for ``tiny_trained_paper``
TINY_PAPER_ARCH = {**TINY_ARCH, "model": "paper"}


def inference_command(models_dir, source, out, arch: dict | None = None) -> list[str]:
    """``python -m monai.bundle run --config_file configs/inference.json`` on ``source``, writing to ``out``.

    Args:
        models_dir: the trained models folder.
        source: a folder of images or a datalist.
        out: the output folder.
        arch: architecture overrides (None: read from the models' ``best.json``).

    Returns:
        the command line, to run from the repository root.
    """
    import json
    import sys
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "inference.json"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config)]
    command += ["--dataset_dir", str(source), "--output_dir", str(out), "--models_dir", str(models_dir)]
    for key, value in (arch or {}).items():
        command += [f"--{key}", json.dumps(value)]
    return command
