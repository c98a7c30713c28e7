"""Ignite handlers that keep a training phase's state: resume checkpoints, best models, early stopping, completion.

- :class:`ResumeCheckpointHandler` saves and restores everything a killed run needs to resume.
- :class:`BestModelSaver` keeps the best model (and encoder) by a validation metric.
- :class:`EarlyStopOnValidation` stops training when validation stops improving.
- :class:`PhaseCompleteHandler` marks a finished phase so a re-run skips it.

The phase-2 loss calibration is in :mod:`bundle.training.calibration`, what a phase logs in
:mod:`bundle.training.phase_logging` and :mod:`bundle.training.progress`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from bundle.utils.atomic import atomic_write_json
from bundle.utils.checkpoints import CheckpointError, read_checkpoint, save_models
from bundle.utils.distributed import is_rank0
from bundle.utils.rng import capture_random_state, restore_random_state
from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)


class PhaseCompleteHandler:
    """Write ``path`` (JSON: epochs run, early stop) when the engine completes, so re-runs skip the phase.

    Args:
        path: marker file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def attach(self, engine: Engine) -> None:
        """Run on ``Events.COMPLETED``."""
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Write the marker (rank 0)."""
        if not is_rank0():
            return
        atomic_write_json(self.path, {"epochs_run": engine.state.epoch, "max_epochs": engine.state.max_epochs})


def register_resume_state(engine: Engine, name: str, obj: object) -> None:
    """Have the engine's :class:`ResumeCheckpointHandler` save and restore ``obj`` under ``name``.

    For a stateful handler defined in the engine's handler list, which the resume handler's
    ``objects`` cannot reference without a list position.
    """
    engine.__dict__.setdefault("resume_objects", {})[name] = obj


class ResumeCheckpointHandler:
    """Save everything needed to resume after every epoch, and resume from the newest save at start.

    Files are ``checkpoint_dir/checkpoint_epoch=N.pt`` written atomically (temporary file, then
    rename); older ones are removed once the new one is in place. (Ignite's ``Checkpoint`` removes the
    previous file before it writes the next one, so a kill between the two would leave no resume
    point; that is why this handler is the bundle's own.) The engine itself (epoch,
    iteration) and every random stream (:func:`bundle.utils.rng.capture_random_state`: torch, NumPy,
    Python and the augmentation transforms of ``random_sources``) are saved with the given objects,
    so a resumed run continues bit for bit where the killed one stopped; loading uses
    ``torch.load(..., weights_only=True)``. The save is registered when the run starts, after every
    other epoch handler, so a checkpoint includes its epoch's validation (best model, early-stopping
    counter). Under DDP every rank loads and only rank 0 writes (ranks > 0 then continue with rank
    0's augmentation streams: valid, but not bit-identical to an uninterrupted DDP run).

    Args:
        checkpoint_dir: folder of the resume checkpoints.
        objects: name -> object with ``state_dict``/``load_state_dict`` (network, optimiser, loss,
            stateful handlers).
        interval: epochs between saves.
        keep: number of newest checkpoints kept.
        random_sources: datasets (or transforms) whose augmentation random states are saved.
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike,
        objects: dict,
        interval: int = 1,
        keep: int = 1,
        random_sources: list | tuple = (),
    ) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.objects = dict(objects)
        self.interval = interval
        self.keep = keep
        self.random_sources = list(random_sources)
        self._saver = Events.EPOCH_COMPLETED(every=interval)

    def attach(self, engine: Engine) -> None:
        """Load at ``STARTED`` (when a checkpoint exists); from then on save every ``interval`` epochs."""
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.STARTED, self._register_save)

    def _register_save(self, engine: Engine) -> None:
        """Register the save now, behind the epoch handlers attached after this one (validation)."""
        if not engine.has_event_handler(self.save):
            engine.add_event_handler(self._saver, self.save)

    def _checkpoints(self) -> list[Path]:
        """Existing checkpoints, oldest first."""
        return sorted(self.checkpoint_dir.glob("checkpoint_epoch=*.pt"), key=lambda p: int(p.stem.split("=")[-1]))

    def _objects(self, engine: Engine) -> dict:
        """The given objects and those handlers registered on the engine (:func:`register_resume_state`)."""
        return {**self.objects, **getattr(engine, "resume_objects", {})}

    def load(self, engine: Engine) -> None:
        """Restore the newest checkpoint, if any."""
        checkpoints = self._checkpoints()
        if not checkpoints:
            return
        path = checkpoints[-1]
        try:
            state = read_checkpoint(path, "resume checkpoint")
        except CheckpointError as error:
            raise CheckpointError(
                f"{error}. Delete it to train this phase again from its start, or give another --output_dir"
            ) from None
        max_epochs = engine.state.max_epochs
        for name, obj in self._objects(engine).items():
            obj.load_state_dict(state[name])
        engine.load_state_dict(state["engine"])
        engine.state.max_epochs = max_epochs
        if "random" in state:
            restore_random_state(state["random"], self.random_sources)
        else:  # checkpoints of 0.5.0 and earlier
            torch.set_rng_state(state["torch_rng"])
        logger.info(f"resumed from {path} at epoch {engine.state.epoch} of {max_epochs}")

    def save(self, engine: Engine) -> None:
        """Write ``checkpoint_epoch=N.pt`` atomically and prune older ones (rank 0)."""
        from bundle.utils.atomic import atomic_path

        if not is_rank0():
            return
        state = {name: obj.state_dict() for name, obj in self._objects(engine).items()}
        state["engine"] = engine.state_dict()
        state["random"] = capture_random_state(self.random_sources)
        path = self.checkpoint_dir / f"checkpoint_epoch={engine.state.epoch}.pt"
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        for old in self._checkpoints()[: -self.keep]:
            old.unlink(missing_ok=True)


class BestModelSaver:
    """Save the network (and sub-networks) when a validation metric improves; resumable.

    Attach to the evaluator. Each file holds the module's plain ``state_dict`` and is written atomically;
    ``best.json`` beside them records the metric and the epoch. Under DDP every rank tracks the
    best value (so resume state agrees) and only rank 0 writes.

    Args:
        save_dir: output folder (e.g. ``models/``).
        files: file name -> module, e.g. ``{"model.pt": net, "encoder.pt": net.encoder}``.
        metric: evaluator metric name.
        mode: ``max`` or ``min`` (which direction is better).
        architecture: the settings that define the network (``model``, ``canvas_size``, ...), saved
            in ``best.json`` so that inference and export rebuild the same network
            (:func:`bundle.model.architecture.saved_architecture`).
    """

    def __init__(
        self, save_dir: str | os.PathLike, files: dict, metric: str, mode: str = "max", architecture: dict | None = None
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.save_dir = Path(save_dir)
        self.files = dict(files)
        self.metric = metric
        self.mode = mode
        self.architecture = dict(architecture or {})
        self.best: float | None = None
        self.best_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        """Run when the evaluator completes (its metrics are computed by then)."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def state_dict(self) -> dict:
        """Best value so far, so a resumed run does not overwrite a better model."""
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Restore the best value."""
        self.best, self.best_epoch = state["best"], state["best_epoch"]

    def __call__(self, engine: Engine) -> None:
        """Save if the metric improved."""
        value = float(engine.state.metrics[self.metric])
        improved = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if not improved:
            return
        self.best, self.best_epoch = value, int(engine.state.epoch)
        if not is_rank0():
            return
        save_models({self.save_dir / name: module for name, module in self.files.items()})
        info = {"metric": self.metric, "value": value, "epoch": self.best_epoch, "architecture": self.architecture}
        atomic_write_json(self.save_dir / "best.json", info, indent=4)  # the zoo's pretty-format-json style
        logger.info(
            f"new best {self.metric} = {value:.5f} at epoch {self.best_epoch}: "
            f"saved {sorted(self.files)} to {self.save_dir}"
        )


class EarlyStopOnValidation:
    """Stop the trainer when a validation metric has not improved for ``patience`` validations.

    Attach to the trainer after the ``ValidationHandler`` (handlers run in registration order).
    Ignite's ``EarlyStopping`` attaches to the evaluator and needs the trainer when it is built, a
    reference cycle in a config (trainer -> its handlers -> validator -> its handlers -> trainer), and
    does not stop a resumed run whose patience had already run out; this one does both.

    Args:
        validator: the evaluator whose metrics are read.
        metric: metric name.
        patience: validations without improvement before stopping.
        mode: ``max`` or ``min``.
        min_delta: smallest change that counts as an improvement.
        state_name: save and restore the counters in the trainer's resume checkpoint under this name
            (:func:`register_resume_state`); None: not resumable.
    """

    def __init__(
        self,
        validator: Engine,
        metric: str,
        patience: int,
        mode: str = "max",
        min_delta: float = 0.0,
        state_name: str | None = None,
    ) -> None:
        self.state_name = state_name
        self.validator = validator
        self.metric = metric
        self.patience = patience
        self.sign = 1.0 if mode == "max" else -1.0
        self.min_delta = min_delta
        self.best: float | None = None
        self.counter = 0

    def attach(self, engine: Engine) -> None:
        """Check after every trainer epoch that ran a validation, and at start (a resumed run that had stopped)."""
        if self.state_name:
            register_resume_state(engine, self.state_name, self)
        engine.add_event_handler(Events.STARTED, self.stop_if_exhausted)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def stop_if_exhausted(self, engine: Engine) -> None:
        """Terminate at once when resumed state says patience had already run out (killed after stopping)."""
        if 0 < self.patience <= self.counter:
            logger.info(
                f"early stopping: already stopped ({self.metric} did not improve for {self.counter} validations)"
            )
            engine.terminate()

    def state_dict(self) -> dict:
        """Best score and the count of validations without improvement."""
        return {"best": self.best, "counter": self.counter}

    def load_state_dict(self, state: dict) -> None:
        """Restore after resume."""
        self.best, self.counter = state["best"], state["counter"]

    def __call__(self, engine: Engine) -> None:
        """Update the counter; terminate the trainer when patience runs out."""
        if (
            self.patience <= 0
            or self.validator.state.epoch != engine.state.epoch
            or self.metric not in self.validator.state.metrics
        ):
            return
        score = self.sign * float(self.validator.state.metrics[self.metric])
        if self.best is None or score > self.best + self.min_delta:
            self.best, self.counter = score, 0
            return
        self.counter += 1
        if self.counter >= self.patience:
            logger.info(f"early stopping: {self.metric} did not improve for {self.patience} validations")
            engine.terminate()
