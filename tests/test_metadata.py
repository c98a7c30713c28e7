"""metadata.json carries the MONAI bundle schema 20240725 fields (checked offline)."""

from __future__ import annotations

import json
from pathlib import Path

import monai
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = [
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
]


def _metadata():
    return json.loads((ROOT / "metadata.json").read_text())


def test_required_fields_are_present_and_the_changelog_holds_the_version():
    meta = _metadata()
    assert [k for k in REQUIRED if k not in meta] == []
    assert meta["version"] in meta["changelog"]


def test_versions_match_the_installed_stack():
    meta = _metadata()
    assert meta["monai_version"] == monai.__version__
    assert meta["pytorch_version"] == torch.__version__.split("+")[0]
    assert meta["numpy_version"].split(".")[0] == np.__version__.split(".")[0]


def test_network_and_encoder_data_formats():
    meta = _metadata()
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 1 and image["value_range"] == [0, 1]
    assert "pred" in meta["network_data_format"]["outputs"]
    assert meta["encoder_data_format"]["outputs"]["latent"]["num_channels"] == 128


def test_configs_metadata_is_the_same_file():
    assert (ROOT / "configs" / "metadata.json").resolve() == (ROOT / "metadata.json").resolve()


def test_monai_verify_net_in_out_passes_on_the_training_config():
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(ROOT / "metadata.json"),
        config_file=str(ROOT / "configs" / "train.json"),
    )
