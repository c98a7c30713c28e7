"""The training workflows on a tiny synthetic run: properties, outputs, determinism, DDP.

Kill-and-resume is tested in ``tests/robustness/test_kill_and_resume.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import error_messages
from monai.bundle import ConfigWorkflow

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "train.json")


def tiny(tmp_path: Path, **extra) -> dict:
    """Overrides of a tiny run rooted in ``tmp_path`` (see ``conftest.TINY_TRAINING``)."""
    from conftest import TINY_TRAINING

    return {"bundle_root": str(tmp_path), "dataset_dir": str(tmp_path / "data"), **TINY_TRAINING, **extra}


def cli_args(settings: dict) -> list[str]:
    args = []
    for key, value in settings.items():
        args += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    return args


def run_workflow(tmp_path: Path, run_id: str = "training", **extra) -> ConfigWorkflow:
    workflow = ConfigWorkflow(config_file=CONFIG, workflow_type="train", run_id=run_id, **tiny(tmp_path, **extra))
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def test_training_config_passes_check_properties(tmp_path):
    workflow = ConfigWorkflow(config_file=CONFIG, workflow_type="train", run_id="training", **tiny(tmp_path))
    workflow.initialize()
    assert workflow.check_properties() in (None, [])  # every required zoo property is present


def test_tiny_training_writes_models_and_report(tiny_trained):
    root, _ = tiny_trained  # the shared session run: conftest._train_tiny runs the default ``run`` id
    models = root / "models"
    for path in ("model.pt", "encoder.pt", "phase1/model.pt", "phase1/encoder.pt"):
        assert (models / path).exists(), path
    encoder = torch.load(models / "encoder.pt", weights_only=True)  # a plain state_dict
    assert encoder and all(not key.startswith("decoder") for key in encoder)
    architecture = json.loads((models / "best.json").read_text())["architecture"]
    assert architecture["model"] == "dual_view" and architecture["canvas_size"] == 64
    report = json.loads((root / "runs/quick/report/metrics.json").read_text())
    for phase in ("phase1", "phase2"):
        for split in ("val", "held_out"):
            assert {"psnr", "ssim", "ms_ssim", "roi_mae", "roi_psnr", "roi_edge_mae"} <= set(
                report["phases"][phase][split]
            )
    assert set(report["loss_weights"]) == {"global", "l1", "edge"}
    assert (
        report["held_out_site"] == 2 and "held-out site (site 2)" in (root / "runs/quick/report/metrics.md").read_text()
    )
    assert (root / "runs/quick/train.log").exists()
    assert any((root / "runs/quick/tensorboard").iterdir())


def test_same_seed_gives_the_same_metrics(tiny_trained, tmp_path):
    from conftest import _train_tiny

    first_root, _ = tiny_trained
    second_root, _ = _train_tiny(tmp_path)  # the same settings in another folder
    first = json.loads((first_root / "runs/quick/report/metrics.json").read_text())["phases"]
    second = json.loads((second_root / "runs/quick/report/metrics.json").read_text())["phases"]
    assert first == second


def test_run_ids_train_one_phase_each(tmp_path):
    run_workflow(tmp_path, run_id="train_phase1")
    assert (tmp_path / "models/phase1/model.pt").exists() and not (tmp_path / "models/model.pt").exists()
    run_workflow(tmp_path, run_id="train_phase2")
    assert (tmp_path / "models/model.pt").exists()


def test_phase2_without_phase1_says_what_is_missing(tmp_path):
    with pytest.raises(Exception) as caught:
        run_workflow(tmp_path, run_id="train_phase2")
    assert any("best phase-1 model (run train_phase1 first) not found" in m for m in error_messages(caught.value))


def test_two_process_cpu_ddp_training(tmp_path):
    overlay = str(ROOT / "configs" / "multi_gpu_train.json")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    bundle_run = ["-m", "monai.bundle", "run", "training", "--config_file", json.dumps([CONFIG, overlay])]
    command = [*launcher, *bundle_run, *cli_args(tiny(tmp_path))]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    logs = [(tmp_path / f"runs/quick/train_rank{rank}.log").read_text() for rank in (0, 1)]
    weights = [
        line.split("weights ")[-1] for log in logs for line in log.splitlines() if "gradient calibration" in line
    ]
    assert len(weights) == 2 and weights[0] == weights[1]  # both ranks use the same calibrated weights
    assert (tmp_path / "models/model.pt").exists() and (tmp_path / "runs/quick/report/metrics.json").exists()


def test_resuming_a_run_folder_with_other_settings_is_refused(tmp_path):
    run_workflow(tmp_path, run_id="train_phase1")
    with pytest.raises(Exception) as info:  # MONAI wraps the ValueError raised inside the config
        run_workflow(tmp_path, run_id="train_phase1", held_out_site=0)
    messages = error_messages(info.value)
    assert any("other settings" in m and "held_out_site" in m and "--output_dir" in m for m in messages)
    run_workflow(tmp_path, run_id="train_phase1", phase1_epochs=3)  # another budget is fine
