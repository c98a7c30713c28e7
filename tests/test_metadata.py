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
        net_id="network_def", meta_file=str(ROOT / "metadata.json"), config_file=str(ROOT / "configs" / "train.json")
    )


def test_required_field_types():
    meta = _metadata()
    for key in ("version", "monai_version", "pytorch_version", "numpy_version", "task", "description", "copyright"):
        assert isinstance(meta[key], str) and meta[key], key
    assert isinstance(meta["authors"], str | list) and meta["authors"]
    assert isinstance(meta["changelog"], dict) and all(isinstance(v, str) for v in meta["changelog"].values())
    assert all(isinstance(v, str) for v in meta["required_packages_version"].values())
    for block in ("network_data_format", "encoder_data_format"):
        for io in ("inputs", "outputs"):
            for name, entry in meta[block][io].items():
                assert {"type", "format", "num_channels", "spatial_shape", "dtype", "value_range"} <= set(entry), name
                assert isinstance(entry["num_channels"], int) and isinstance(entry["spatial_shape"], list), name


def test_monai_verify_net_in_out_passes_on_the_encoder():
    from monai.bundle import verify_net_in_out

    # verify_net_in_out reads network_data_format and passes one input: check the paper model's encoder
    # (the dual-view encoder's second input is checked by tests/test_dual_view.py), output = the latent
    verify_net_in_out(
        net_id="encoder_def",
        model="paper",
        **{"_meta_#network_data_format#inputs#image#spatial_shape": [128, 128]},
        meta_file=str(ROOT / "metadata.json"),
        config_file=str(ROOT / "configs" / "train.json"),
        **{"_meta_#network_data_format#outputs#pred#num_channels": 128},
    )


def test_ckpt_export_of_the_full_network_reloads_with_metadata(tiny_trained, tmp_path):
    from monai.bundle import ckpt_export
    from monai.data import load_net_with_metadata

    root, _ = tiny_trained
    # As the zoo calls it: no --key_in_ckpt (models/model.pt is a plain state_dict); the architecture
    # of the tiny run comes from models/best.json through configs/inference.json.
    ckpt_export(
        net_id="network_def",
        filepath=str(tmp_path / "model.ts"),
        ckpt_file=str(root / "models/model.pt"),
        meta_file=str(ROOT / "metadata.json"),
        config_file=str(ROOT / "configs/inference.json"),
        models_dir=str(root / "models"),
    )
    net, meta, _ = load_net_with_metadata(str(tmp_path / "model.ts"))
    assert meta["version"] == _metadata()["version"]
    # The eager network, built and loaded the way inference builds it, gives the same output.
    from bundle.utils.checkpoints import load_model_weights
    from bundle.utils.paths import INFERENCE_CONFIG, load_config

    parser = load_config(INFERENCE_CONFIG, {"models_dir": str(root / "models")})
    eager = load_model_weights(parser.get_parsed_content("network_def"), root / "models/model.pt").eval()
    mosaic = torch.rand(2, 1, 64, 96, generator=torch.Generator().manual_seed(0))  # canvas | zoom view
    with torch.no_grad():
        scripted, expected = net.eval()(mosaic), eager(mosaic)
    assert scripted.shape == (2, 1, 64, 96)
    torch.testing.assert_close(scripted, expected, rtol=0, atol=1e-6)


def test_checkpoints_of_0_7_0_with_a_model_key_still_load_and_export(tiny_trained, tmp_path):
    from bundle.deploy.export import export_torchscript
    from bundle.model.network import build_encoder
    from bundle.utils.checkpoints import load_model_weights, state_dict_key
    from conftest import TINY_ARCH

    root, _ = tiny_trained
    plain = torch.load(root / "models/encoder.pt", weights_only=True)
    assert state_dict_key(root / "models/encoder.pt") == ""
    legacy = tmp_path / "encoder.pt"
    torch.save({"model": plain}, legacy)
    assert state_dict_key(legacy) == "model"
    encoder = build_encoder(
        "dual_view",
        widths=TINY_ARCH["network_widths"],
        roi_widths=TINY_ARCH["roi_network_widths"],
        latent_dim=128,
        norm="batch",
    )
    loaded = load_model_weights(encoder, legacy).state_dict()
    assert all(torch.equal(loaded[k], plain[k]) for k in plain)
    exported = export_torchscript(tmp_path / "encoder.ts", legacy, **TINY_ARCH)
    assert exported.is_file()


def test_evaluate_config_passes_check_properties(tiny_trained):
    from monai.bundle import ConfigWorkflow

    root, settings = tiny_trained
    configs = [str(ROOT / "configs/train.json"), str(ROOT / "configs/evaluate.json")]
    workflow = ConfigWorkflow(config_file=configs, workflow_type="eval", run_id="evaluating", **settings)
    workflow.initialize()
    assert workflow.check_properties() in (None, [])


def test_documented_zoo_check_commands(tiny_trained, tmp_path):
    """The verify_net_in_out and ckpt_export command lines of docs/inference.md, run as written."""
    import re
    import subprocess
    import sys

    from conftest import TINY_ARCH

    root, _ = tiny_trained
    text = (ROOT / "docs/inference.md").read_text()
    block = re.search(r"To check the bundle against MONAI's own tools:\n\n```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split()[3:] for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    assert [c[0] for c in commands] == ["verify_net_in_out", "ckpt_export"]
    architecture = [a for k, v in TINY_ARCH.items() for a in (f"--{k}", json.dumps(v))]
    for args in commands:
        args = [str(tmp_path / "model.ts") if a == "models/model.ts" else a for a in args]
        args = [str(root / a) if a.startswith("models/") else a for a in args]
        result = subprocess.run(
            [sys.executable, "-m", "monai.bundle", *args, *architecture], cwd=ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "model.ts").exists()
