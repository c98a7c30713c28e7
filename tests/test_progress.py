"""Issue 32.3: without a terminal, training logs a progress line at least every 30 s with epoch, loss and ETA."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from bundle.training.progress import ProgressHandler, ProgressLogHandler
from ignite.engine import Engine

ROOT = Path(__file__).resolve().parents[1]


def test_progress_lines_carry_epoch_iteration_loss_and_eta(caplog):
    engine = Engine(lambda engine, batch: {"loss": torch.tensor(0.25 + batch)})
    ProgressLogHandler("phase 1", interval=0.0).attach(engine)
    with caplog.at_level(logging.INFO, logger="fetal_nt_roi_cae"):
        engine.run([0.0, 0.1, 0.2, 0.3], max_epochs=3)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("phase 1:")]
    assert len(lines) == 12 + 3  # every iteration (interval 0) and every epoch's end
    assert lines[0].startswith("phase 1: epoch 1/3, iteration 1/4, loss 0.2500, ")
    assert "iteration 4/4, loss 0.5500" in lines[4] and lines[-1].startswith("phase 1: epoch 3/3, iteration 4/4")
    assert all("s/epoch" in line and "elapsed 0:00:0" in line and "ETA 0:00:0" in line for line in lines)


def test_the_default_interval_logs_only_at_epoch_ends_of_a_fast_run(caplog):
    engine = Engine(lambda engine, batch: {"loss": torch.tensor(1.0)})
    ProgressLogHandler("phase 2").attach(engine)  # 30 s: nothing within these short epochs
    with caplog.at_level(logging.INFO, logger="fetal_nt_roi_cae"):
        engine.run(range(5), max_epochs=2)
    ours = [r.getMessage().split(",")[0] for r in caplog.records if r.name == "fetal_nt_roi_cae"]
    assert ours == ["phase 2: epoch 1/2", "phase 2: epoch 2/2"]


def test_both_phases_log_progress_when_there_is_no_terminal():
    config = json.loads((ROOT / "configs/train.json").read_text())
    logging_def = config["phase_logging"]
    assert logging_def["show_progress"] == "@show_progress"
    assert logging_def["progress_interval"] == "@progress_interval"
    assert config["phase_handlers"]["logging"] == "@phase_logging"  # every phase's handlers log it
    for phase, tag in ((config["train"], "phase1"), (config["phase2"], "phase2")):
        (handler,) = [h for h in phase["handlers"] if h["_target_"] == "@phase_handlers"]
        assert handler["tag"] == tag
    assert config["progress_interval"] <= 30


def test_progress_handler_logs_lines_without_a_terminal(caplog):
    engine = Engine(lambda e, b: {"loss": torch.tensor(0.5)})
    ProgressHandler("phase 1", bar="false", interval=0.0).attach(engine)
    with caplog.at_level(logging.INFO, logger="fetal_nt_roi_cae"):
        engine.run(range(2), max_epochs=1)
    ours = [r.getMessage().split(",")[0] for r in caplog.records if r.name == "fetal_nt_roi_cae"]
    assert ours[0] == "phase 1: epoch 1/1"


def test_a_bad_show_progress_names_the_setting_and_the_fix():
    with pytest.raises(
        ValueError, match=r"setting show_progress = 'maybe' must be true or false; e.g. --show_progress"
    ):
        ProgressHandler("phase 1", bar="maybe")
