"""An output folder that cannot be written, or a nearly full disk, stops a run before it starts."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest
from bundle.training.workflow import check_writable
from monai.bundle import ConfigWorkflow

ROOT = Path(__file__).resolve().parents[2]
Usage = namedtuple("Usage", "total used free")


def _workflow(tmp_path: Path, **overrides) -> ConfigWorkflow:
    settings = {"bundle_root": str(tmp_path), "dataset_dir": str(tmp_path / "data"), **overrides}
    return ConfigWorkflow(
        config_file=str(ROOT / "configs" / "train.json"), workflow_type="train", run_id="training", **settings
    )


def test_unwritable_output_dir_fails_before_anything_is_made(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    workflow = _workflow(tmp_path, output_dir=str(blocker / "run"))
    with pytest.raises(RuntimeError) as caught:
        workflow.initialize()
    message = str(caught.value.__cause__ or caught.value)
    assert "output_dir" in message and str(blocker / "run") in message and "--output_dir" in message
    assert not (tmp_path / "data").exists() and not (tmp_path / "models").exists()


def test_a_nearly_full_disk_is_refused_with_the_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10 * 2**30, 10 * 2**30 - 50 * 2**20, 50 * 2**20))
    with pytest.raises(OSError, match=r"models_dir = .*only 50 MB free .* 200 MB needed"):
        check_writable({"models_dir": tmp_path / "models"})
    check_writable({"models_dir": tmp_path / "models"}, min_free_mb=10)  # enough for a smaller need


def test_writable_folders_pass_and_leave_nothing_behind(tmp_path):
    check_writable({"output_dir": tmp_path / "run", "models_dir": tmp_path / "models"})
    assert list(tmp_path.iterdir()) == []  # checked from the nearest existing folder: no probe, no folder


@pytest.mark.parametrize(
    "blocked, key",
    [
        ("models/phase1", "validate#best_model_saver#save_dir"),
        ("runs/quick/checkpoints/phase1", "train#checkpoint_dir"),
        ("runs/quick/checkpoints/phase2", "phase2#checkpoint_dir"),
    ],
)
def test_a_checkpoint_or_phase1_folder_that_is_a_file_is_refused_before_training(tmp_path, blocked, key):
    path = tmp_path / blocked
    path.parent.mkdir(parents=True)
    path.write_text("a file where a folder belongs")
    workflow = _workflow(tmp_path)
    with pytest.raises(RuntimeError) as caught:
        workflow.initialize()
    message = str(caught.value.__cause__ or caught.value)
    assert f"{key} = {path}" in message and f"--{key}" in message, message
    assert not (tmp_path / "data").exists()  # refused before the data were made
    assert path.read_text() == "a file where a folder belongs"
