"""Shared fixtures: one small synthetic dataset per test session (seconds to make)."""

from __future__ import annotations

import pytest

from bundle.synthetic.dataset import write_synthetic_dataset


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    """Six 128x128-bounded images per site in PNG, DICOM and NIfTI, with label maps."""
    root = tmp_path_factory.mktemp("synthetic")
    path = write_synthetic_dataset(
        root, per_site=6, size=(128, 128), formats=("png", "dcm", "nii"), masks=True, progress=False
    )
    return path


TINY_TRAINING = {
    "synthetic#per_site": 6,
    "synthetic#size": [64, 64],
    "synthetic#workers": 1,
    "canvas_size": 64,
    "network_widths": [8, 16, 16, 32, 32],
    "batch_size": 4,
    "phase1_epochs": 2,
    "phase2_epochs": 2,
    "calibration_batches": 2,
    "cache_workers": 0,
}


@pytest.fixture
def tiny_training():
    """Training overrides for a run of a few seconds: 6 images per site at 64 px, two epochs per phase."""
    return dict(TINY_TRAINING)
