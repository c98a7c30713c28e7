"""Issue 32.2: ``--help`` on ``monai.bundle run`` prints the settings and exits 0 without training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bundle.training.help import exit_with_help_if_asked

ROOT = Path(__file__).resolve().parents[1]
MONAI_MAIN = str(Path(sys.executable).parent / "lib/python/site-packages/monai/bundle/__main__.py")


def test_main_job_help_prints_the_settings_and_starts_nothing(tmp_path):
    out = tmp_path / "run_folder"
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json"]
    command += ["--output_dir", str(out), "--models_dir", str(tmp_path / "models"), "--help"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: python -m monai.bundle run" in done.stdout
    for text in (
        "--phase1_epochs",
        "epochs of phase 1",
        "train_localizer",
        "--localizer ",
        "--tracking configs/mlflow.json",
    ):
        assert text in done.stdout, text
    assert not out.exists() and not (tmp_path / "models").exists()  # nothing trained, nothing written


@pytest.mark.parametrize(
    ("config", "flag", "expected"),
    [
        ("configs/inference.json", "--help", ("--dataset_dir", "--localizer_path", "--batch_size")),
        ("configs/diffice/diffice.json", "-h", ("train_guide", "counterfactuals", "--output_dir")),
    ],
)
def test_inference_and_diffice_help(tmp_path, capsys, config, flag, expected):
    argv = [MONAI_MAIN, "run", "--config_file", str(ROOT / config), flag]
    with pytest.raises(SystemExit) as stop:
        exit_with_help_if_asked(argv)
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    for text in expected:
        assert text in shown, text
    exit_with_help_if_asked([MONAI_MAIN, "run", "--config_file", str(ROOT / config)])  # no flag: nothing happens
    exit_with_help_if_asked(["pytest", "--help"])  # not a monai.bundle command: nothing happens
