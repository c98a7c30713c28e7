"""One phase's handlers in one config entry (issue 33): order, resume before calibration, shared early stopping."""

from __future__ import annotations

import json

import torch
from bundle.model.metrics import ReconstructionMetric, reconstruction_metrics
from bundle.training.handlers import BestModelSaver
from bundle.training.phase_handlers import PhaseHandlers
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator


class _Calibration:
    """Records the epoch the trainer is at when it starts (0 on a fresh run, the resumed epoch otherwise)."""

    def __init__(self) -> None:
        self.started_at: list[int] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: self.started_at.append(e.state.epoch))


def _phase(tmp_path, scores: list[float], calibration: _Calibration, logged: list):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    trainer = Engine(lambda engine, batch: optimizer.step())
    validator = SupervisedEvaluator(
        device="cpu",
        val_data_loader=[{"image": torch.zeros(1, 2), "label": torch.zeros(1, 2)}],
        network=model,
        decollate=False,
    )
    validator.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(score=scores[trainer.state.epoch - 1])
    )
    best = BestModelSaver(tmp_path / "best", "score", mode="max", files={"model.pt": model})
    best.attach(validator)

    def logging(tag: str, desc: str, validator: Engine) -> _Calibration:
        logged.append((tag, desc, validator))
        return _Calibration()

    handlers = PhaseHandlers(
        tag="phase2",
        desc="phase 2",
        network=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        validator=validator,
        best_model=best,
        checkpoint_dir=tmp_path / "checkpoints",
        complete_marker=tmp_path / "phase2_complete.json",
        patience=2,
        logging=logging,
        calibration=calibration,
    )
    handlers.attach(trainer)
    return trainer, optimizer, handlers


def test_a_phase_validates_stops_early_steps_its_schedule_and_marks_completion(tmp_path):
    calibration, logged = _Calibration(), []
    trainer, optimizer, _ = _phase(tmp_path, [1.0, 2.0, 2.0, 1.0, 3.0, 4.0], calibration, logged)
    trainer.run(range(2), max_epochs=6)
    assert trainer.state.epoch == 4  # the best-model saver's metric and direction stop it after two flat epochs
    assert json.loads((tmp_path / "best/best.json").read_text())["epoch"] == 2
    assert optimizer.param_groups[0]["lr"] == 0.5**4  # stepped once per epoch
    assert json.loads((tmp_path / "phase2_complete.json").read_text())["epochs_run"] == 4
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["checkpoint_epoch=4.pt"]
    assert [(tag, desc) for tag, desc, _ in logged] == [("phase2", "phase 2")]


def test_calibration_runs_after_the_resume(tmp_path):
    first, second = _Calibration(), _Calibration()
    trainer, *_ = _phase(tmp_path, [1.0, 2.0, 3.0, 4.0], first, [])
    trainer.run(range(2), max_epochs=2)  # "killed" after epoch 2
    trainer, optimizer, _ = _phase(tmp_path, [1.0, 2.0, 3.0, 4.0], second, [])
    trainer.run(range(2), max_epochs=4)
    assert (first.started_at, second.started_at) == ([0], [2])  # it sees the resumed state
    assert optimizer.param_groups[0]["lr"] == 0.5**4  # the schedule resumed too


def test_no_logging_and_no_calibration_leave_their_places_empty(tmp_path):
    handlers = PhaseHandlers(
        "phase1",
        "phase 1",
        torch.nn.Linear(1, 1),
        torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0),
        None,
        SupervisedEvaluator(device="cpu", val_data_loader=[], network=torch.nn.Identity()),
        BestModelSaver(tmp_path, "score", files={"model.pt": torch.nn.Linear(1, 1)}),
        tmp_path,
        tmp_path / "done.json",
    )
    names = [type(h).__name__ for h in handlers.handlers if h is not None]
    assert names == [
        "ResumeCheckpointHandler",
        "ValidationHandler",
        "EarlyStopOnValidation",
        "LrScheduleHandler",
        "PhaseCompleteHandler",
    ]


def test_reconstruction_metrics_are_named_in_order():
    metrics = reconstruction_metrics(
        "psnr", "roi_mae", prefix="val_", val_objective=lambda p, t: (p - t).mean((1, 2, 3))
    )
    assert list(metrics) == ["val_psnr", "val_roi_mae", "val_objective"]
    assert all(isinstance(metric, ReconstructionMetric) for metric in metrics.values())
