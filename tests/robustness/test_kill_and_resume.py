"""A training run killed with SIGKILL at several points resumes and ends bit for bit like an uninterrupted one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TRAINING

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "train.json")

#: where the chained run is killed: (description, file whose appearance triggers the kill)
KILL_POINTS = [
    ("while the synthetic data is written", "data/images/site0/*.png"),
    ("right after the first phase-1 checkpoint", "runs/quick/checkpoints/phase1/checkpoint_epoch=1.pt"),
    ("between the phases (phase-2 calibration / first epoch)", "runs/quick/phase1_complete.json"),
    ("inside phase 2", "runs/quick/checkpoints/phase2/checkpoint_epoch=2.pt"),
    ("while the report and latents are written", "runs/quick/phase2_complete.json"),
]


def _settings(root: Path) -> dict:
    return {
        "bundle_root": str(root),
        "dataset_dir": str(root / "data"),
        **TINY_TRAINING,
        "synthetic#per_site": 8,
        "phase1_epochs": 3,
        "phase2_epochs": 3,
    }


def _start(root: Path, log: Path) -> subprocess.Popen:
    args = []
    for key, value in _settings(root).items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", CONFIG, *args]
    return subprocess.Popen(command, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _kill_after(process: subprocess.Popen, root: Path, pattern: str, delay: float, timeout: float = 240.0) -> bool:
    """SIGKILL ``process`` ``delay`` seconds after a file matching ``pattern`` appears; False if it ended first."""
    deadline = time.time() + timeout
    while not list(root.glob(pattern)):
        if process.poll() is not None:
            return False
        assert time.time() < deadline, f"{pattern} did not appear"
        time.sleep(0.01)
    time.sleep(delay)
    if process.poll() is not None:
        return False
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return True


def _outcome(root: Path) -> dict:
    """Everything a finished run produced that must not depend on interruptions."""
    report = json.loads((root / "runs/quick/report/metrics.json").read_text())
    report.pop("checkpoints")  # the two runs' model paths
    models = {
        name: torch.load(root / "models" / name, weights_only=True)
        for name in ("model.pt", "encoder.pt", "phase1/model.pt")
    }
    scorer = dict(np.load(root / "models/scorer.npz", allow_pickle=False))
    scorer.pop("info_model")  # the two runs' model paths
    return {"report": report, "models": models, "scorer": scorer}


def _assert_identical(first: dict, second: dict) -> None:
    assert first["report"] == second["report"]
    for name, state in first["models"].items():
        assert state.keys() == second["models"][name].keys()
        for key, tensor in state.items():
            assert torch.equal(tensor, second["models"][name][key]), f"{name}:{key} differs"
    assert first["scorer"].keys() == second["scorer"].keys()
    for key, array in first["scorer"].items():
        assert np.array_equal(array, second["scorer"][key]), f"scorer.npz:{key} differs"


def test_run_killed_at_five_points_ends_bit_for_bit_like_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    process = _start(straight, tmp_path / "straight.log")
    assert process.wait(timeout=400) == 0, (tmp_path / "straight.log").read_text()[-3000:]

    chained, rng, kills = tmp_path / "chained", random.Random(9), []
    for index, (where, pattern) in enumerate(KILL_POINTS):
        log = tmp_path / f"chained_{index}.log"
        process = _start(chained, log)
        if _kill_after(process, chained, pattern, delay=rng.uniform(0.0, 0.15)):
            kills.append(where)
        else:
            assert process.returncode == 0, log.read_text()[-3000:]
        if index == 1:  # the checkpoint holds its epoch's validation (saved after it, not before)
            [checkpoint] = (chained / "runs/quick/checkpoints/phase1").glob("checkpoint_epoch=*.pt")
            state = torch.load(checkpoint, weights_only=True)
            epoch = int(checkpoint.stem.split("=")[-1])
            assert 1 <= state["best_model"]["best_epoch"] <= epoch
            assert state["early_stop"]["counter"] == epoch - state["best_model"]["best_epoch"]
    final = _start(chained, tmp_path / "chained_final.log")
    assert final.wait(timeout=400) == 0, (tmp_path / "chained_final.log").read_text()[-3000:]

    assert len(kills) >= 4, f"only killed {kills}"  # a kill may miss when the run finished its step first
    logs = "".join(path.read_text() for path in sorted(tmp_path.glob("chained_*.log")))
    assert "resumed from" in logs and "phase 1: already complete" in logs
    _assert_identical(_outcome(straight), _outcome(chained))


def _augmentation():
    from bundle.data.transforms import RandGainGammad
    from monai.transforms import Compose, RandAffined

    return Compose(
        [
            RandGainGammad(keys="image", gain_range=(0.75, 1.33), gamma_range=(0.7, 1.4), prob=0.8),
            RandAffined(keys="image", prob=0.8, scale_range=0.1, translate_range=6, padding_mode="zeros"),
        ]
    )


def test_captured_random_state_replays_the_augmentation_and_global_streams(tmp_path):
    from bundle.utils.rng import capture_random_state, reseed, restore_random_state, transform_generators

    augmentation, image = _augmentation(), torch.rand(1, 32, 32)
    assert len(transform_generators([augmentation])) >= 3  # Compose, gain/gamma, affine (and its grid)
    reseed(3, [augmentation])

    def draw() -> list:
        return [augmentation({"image": image})["image"], torch.rand(3), np.random.rand(3), random.random()]

    draw()
    torch.save(capture_random_state([augmentation]), tmp_path / "state.pt")
    expected = draw()
    draw()  # move every stream on
    restore_random_state(torch.load(tmp_path / "state.pt", weights_only=True), [augmentation])
    replayed = draw()
    for want, got in zip(expected, replayed, strict=True):
        assert np.array_equal(np.asarray(want), np.asarray(got))


def test_restoring_into_another_augmentation_chain_says_what_to_do():
    from bundle.utils.rng import capture_random_state, restore_random_state

    state = capture_random_state([_augmentation()])
    with pytest.raises(ValueError, match="resume with the config the run started with"):
        restore_random_state(state, [])


def test_a_run_killed_after_early_stopping_stops_again_at_once():
    from bundle.training.handlers import EarlyStopOnValidation
    from ignite.engine import Engine

    trainer, validator = Engine(lambda engine, batch: None), Engine(lambda engine, batch: None)
    stopper = EarlyStopOnValidation(validator, "score", patience=3)
    stopper.attach(trainer)
    stopper.load_state_dict({"best": 1.0, "counter": 3})  # what the resume handler restores
    state = trainer.run(range(5), max_epochs=4)
    assert state.iteration == 0
    stopper.load_state_dict({"best": 1.0, "counter": 1})
    assert trainer.run(range(5), max_epochs=4).iteration == 20


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_stop_with_one_line_and_the_run_resumes(tmp_path, stop):
    root = tmp_path / "run"
    log = tmp_path / "first.log"
    process = _start(root, log)
    first_checkpoint = "runs/quick/checkpoints/phase1/checkpoint_epoch=1.pt"
    deadline = time.time() + 240
    while not (root / first_checkpoint).exists():
        assert process.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.01)
    process.send_signal(stop)
    assert process.wait(timeout=60) == 128 + stop, log.read_text()[-3000:]
    lines = [line for line in log.read_text().splitlines() if line.startswith("fetal_nt_roi_cae: stopped by")]
    assert lines == [
        f"fetal_nt_roi_cae: stopped by {signal.Signals(stop).name}; the checkpoints up to the last finished epoch "
        f"are kept in {root / 'runs/quick'}; run the same command again to resume"
    ]
    last = [line for line in log.read_text().splitlines() if line.strip()][-1]
    assert "resume from the last epoch with:" in last and "-m monai.bundle run training" in last, last  # issue 30.11
    assert "--bundle_root" in last and str(root) in last
    assert torch.load(root / first_checkpoint, weights_only=True)  # the checkpoint is whole
    assert not (root / "runs/quick/phase2_complete.json").exists()
    assert not (root / "runs/quick/.run.lock").exists() and not list(root.rglob(".*.tmp"))
    if stop == signal.SIGINT:
        return  # resuming is the same for both signals: checked once, after SIGTERM
    resumed = _start(root, tmp_path / "second.log")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert "resum" in (tmp_path / "second.log").read_text().lower()
    assert (root / "runs/quick/report/metrics.json").is_file()
