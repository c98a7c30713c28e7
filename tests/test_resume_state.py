"""Phase state on ignite's handlers: ``Checkpoint`` + atomic ``DiskSaver`` for resuming, ``EarlyStopping``."""

from __future__ import annotations

import pytest
import torch
from bundle.training.handlers import EarlyStopOnValidation, ResumeCheckpointHandler
from bundle.utils.checkpoints import ReplacingDiskSaver
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint


def _trainer(model: torch.nn.Module, steps: list | None = None) -> Engine:
    """An engine whose every iteration moves the model's weight by a random step (counted in ``steps``)."""

    def step(engine, batch):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        if steps is not None:
            steps.append(engine.state.iteration)

    return Engine(step)


def _files(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_a_resumed_run_continues_like_a_straight_one_and_keeps_one_checkpoint(tmp_path):
    straight, resumed = torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(2, 2, bias=False)
    resumed.load_state_dict(straight.state_dict())
    torch.manual_seed(0)
    engine = _trainer(straight)
    ResumeCheckpointHandler(tmp_path / "straight", {"model": straight}).attach(engine)
    engine.run(range(3), max_epochs=4)

    torch.manual_seed(0)
    first = _trainer(resumed)
    ResumeCheckpointHandler(tmp_path / "resumed", {"model": resumed}).attach(first)
    first.run(range(3), max_epochs=2)  # "killed" after epoch 2
    assert _files(tmp_path / "resumed") == ["checkpoint_epoch=2.pt"]
    torch.manual_seed(123)  # the global stream moved on: the checkpoint puts it back
    second = _trainer(resumed)
    ResumeCheckpointHandler(tmp_path / "resumed", {"model": resumed}).attach(second)
    second.run(range(3), max_epochs=4)
    assert second.state.epoch == 4 and second.state.iteration == 12
    assert torch.equal(straight.weight, resumed.weight)
    assert _files(tmp_path / "resumed") == ["checkpoint_epoch=4.pt"]  # the pre-kill file was pruned
    assert set(torch.load(tmp_path / "resumed/checkpoint_epoch=4.pt", weights_only=True)) == {
        "model",
        "engine",
        "random",
        "checkpointer",
    }


def test_a_checkpoint_without_ignites_file_list_is_resumed_and_pruned(tmp_path):
    """Checkpoints written by 0.13.0 (the bundle's own saver) hold no ``checkpointer`` entry."""
    model = torch.nn.Linear(2, 2, bias=False)
    first = _trainer(model)
    ResumeCheckpointHandler(tmp_path, {"model": model}).attach(first)
    first.run(range(2), max_epochs=1)
    state = torch.load(tmp_path / "checkpoint_epoch=1.pt", weights_only=True)
    del state["checkpointer"]
    torch.save(state, tmp_path / "checkpoint_epoch=1.pt")
    steps = []
    second = _trainer(model, steps)
    ResumeCheckpointHandler(tmp_path, {"model": model}).attach(second)
    second.run(range(2), max_epochs=3)
    assert steps == [3, 4, 5, 6]  # resumed after epoch 1 (2 iterations)
    assert _files(tmp_path) == ["checkpoint_epoch=3.pt"]


def test_a_superseded_checkpoint_stays_until_the_next_one_is_written(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    engine = Engine(lambda engine, batch: None)
    checkpoint = Checkpoint(
        {"model": model},
        ReplacingDiskSaver(tmp_path),
        filename_pattern="{name}_epoch={global_step}.{ext}",
        n_saved=1,
        global_step_transform=lambda engine, event: engine.state.epoch,
    )
    engine.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    engine.run(range(1), max_epochs=1)
    assert _files(tmp_path) == ["model_epoch=1.pt"]

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        engine.run(range(1), max_epochs=2)
    assert _files(tmp_path) == ["model_epoch=1.pt"]  # ignite's own DiskSaver would have removed it already
    monkeypatch.undo()
    assert torch.load(tmp_path / "model_epoch=1.pt", weights_only=True).keys() == model.state_dict().keys()


@pytest.mark.parametrize(("mode", "scores", "stopped_at"), [("max", [1, 2, 2, 1, 3], 4), ("min", [3, 2, 2, 4, 1], 4)])
def test_early_stopping_counts_validations_without_improvement(mode, scores, stopped_at):
    trainer, validator = Engine(lambda engine, batch: None), Engine(lambda engine, batch: None)
    validator.add_event_handler(
        Events.EPOCH_COMPLETED, lambda engine: engine.state.metrics.update(score=scores[trainer.state.epoch - 1])
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: validator.run(range(1)))
    stopper = EarlyStopOnValidation(validator, "score", patience=2, mode=mode)
    stopper.attach(trainer)
    trainer.run(range(1), max_epochs=len(scores))
    assert trainer.state.epoch == stopped_at
    assert stopper.state_dict() == {"best": 2.0 if mode == "max" else -2.0, "counter": 2}


def test_patience_zero_never_stops():
    trainer, validator = Engine(lambda engine, batch: None), Engine(lambda engine, batch: None)
    validator.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: engine.state.metrics.update(score=1.0))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: validator.run(range(1)))
    EarlyStopOnValidation(validator, "score", patience=0).attach(trainer)
    assert trainer.run(range(1), max_epochs=6).epoch == 6


def test_a_checkpoint_saved_again_under_its_own_name_is_kept(tmp_path):
    engine = Engine(lambda engine, batch: None)
    checkpoint = Checkpoint(
        {"model": torch.nn.Linear(2, 2)},
        ReplacingDiskSaver(tmp_path),
        filename_pattern="{name}_epoch={global_step}.{ext}",
        n_saved=1,
        global_step_transform=lambda engine, event: engine.state.epoch,
    )
    engine.state.epoch = 3
    checkpoint(engine)
    checkpoint(engine)  # ignite asks to remove the old file of this name before writing it again
    assert _files(tmp_path) == ["model_epoch=3.pt"]
