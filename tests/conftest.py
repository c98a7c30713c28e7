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
