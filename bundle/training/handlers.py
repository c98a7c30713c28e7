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
from bundle.utils.checkpoints import CheckpointError, ReplacingDiskSaver, read_checkpoint, save_models
from bundle.utils.distributed import is_rank0
from bundle.utils.rng import RandomStreams
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, EarlyStopping

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

    Saving is ignite's ``Checkpoint`` (``checkpoint_dir/checkpoint_epoch=N.pt``, newest ``keep`` kept,
    its file list included so a resumed run prunes older ones) through ignite's atomic ``DiskSaver``
    (:class:`~bundle.utils.checkpoints.ReplacingDiskSaver`: a superseded file goes after the new one is
    written). A checkpoint holds the given objects, the engine (epoch, iteration) and every random stream
    (:class:`~bundle.utils.rng.RandomStreams`), so a resumed run continues bit for bit where the killed one
    stopped. Loading reads the newest file with ``torch.load(..., weights_only=True)`` and hands it to
    ``Checkpoint.load_objects``. The save is registered when the run starts, after every other
    epoch handler, so a checkpoint includes its epoch's validation (best model, early-stopping
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
        self.random = RandomStreams(random_sources)
        self.checkpoint: Checkpoint | None = None

    def attach(self, engine: Engine) -> None:
        """Load at ``STARTED`` (when a checkpoint exists); from then on save every ``interval`` epochs."""
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.STARTED, self._register_save)

    def _register_save(self, engine: Engine) -> None:
        """Register the save now, behind the epoch handlers attached after this one (validation)."""
        if not engine.has_event_handler(self._checkpointer(engine)):
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self._checkpointer(engine))

    def _objects(self, engine: Engine) -> dict:
        """The given objects, handlers registered on the engine (:func:`register_resume_state`), engine, streams."""
        return {**self.objects, **getattr(engine, "resume_objects", {}), "engine": engine, "random": self.random}

    def _checkpointer(self, engine: Engine) -> Checkpoint:
        """Ignite's ``Checkpoint`` of this phase (made once)."""
        if self.checkpoint is None:
            self.checkpoint = Checkpoint(
                self._objects(engine),
                ReplacingDiskSaver(self.checkpoint_dir),
                filename_pattern="{name}_epoch={global_step}.{ext}",
                n_saved=self.keep,
                global_step_transform=lambda engine, event: engine.state.epoch,
                include_self=True,
            )
        return self.checkpoint

    def load(self, engine: Engine) -> None:
        """Restore the newest checkpoint, if any."""
        checkpoints = sorted(
            self.checkpoint_dir.glob("checkpoint_epoch=*.pt"), key=lambda p: int(p.stem.split("=")[-1])
        )
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
        objects = {**self._objects(engine), "checkpointer": self._checkpointer(engine)}
        Checkpoint.load_objects({name: obj for name, obj in objects.items() if name in state}, state)
        if "checkpointer" not in state:  # written by 0.13.0 or earlier: prune it once the next one is saved
            self._checkpointer(engine).load_state_dict({"_saved": [(engine.state.epoch, path.name)]})
        engine.state.max_epochs = max_epochs
        logger.info(f"resumed from {path} at epoch {engine.state.epoch} of {max_epochs}")


class BestModelSaver:
    """Save the network (and sub-networks) when a validation metric improves; resumable.

    Attach to the evaluator. Each file holds the module's plain ``state_dict`` and is written atomically;
    ``best.json`` beside them records the metric and the epoch. Under DDP every rank tracks the
    best value (so resume state agrees) and only rank 0 writes.

    Args:
        save_dir: output folder (e.g. ``models/``).
        metric: evaluator metric name.
        mode: ``max`` or ``min`` (which direction is better).
        architecture: the settings that define the network (``model``, ``canvas_size``, ...), saved
            in ``best.json`` so that inference and export rebuild the same network
            (:func:`bundle.model.architecture.saved_architecture`).
        network: the autoencoder, saved as ``model.pt`` and its encoder as ``encoder.pt``.
        files: instead of ``network``, file name -> module.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        metric: str,
        mode: str = "max",
        architecture: dict | None = None,
        network: torch.nn.Module | None = None,
        files: dict | None = None,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.save_dir = Path(save_dir)
        self.files = dict(files) if files else {"model.pt": network, "encoder.pt": network.encoder}
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

    Ignite's ``EarlyStopping``, attached to the validator's ``COMPLETED`` event by this trainer
    handler (so a config need not hand the trainer to its own validator's handlers, a reference
    cycle), plus what it does not do: a resumed run whose patience had already run out (killed
    between stopping and the completion marker) stops again at once, and ``patience <= 0``
    turns early stopping off. Its counters are saved in the trainer's resume checkpoint under
    ``state_name`` (:func:`register_resume_state`).

    Args:
        validator: the evaluator whose metrics are read.
        metric: metric name.
        patience: validations without improvement before stopping; 0 or less: never stop.
        mode: ``max`` or ``min``.
        min_delta: smallest change that counts as an improvement.
        state_name: save and restore the counters in the trainer's resume checkpoint under this name;
            None: not resumable.
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
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.validator = validator
        self.metric = metric
        self.patience = patience
        self.mode = mode
        self.sign = 1.0 if mode == "max" else -1.0  # the saved best score is signed: larger is better
        self.min_delta = min_delta
        self.state_name = state_name
        self.stopper: EarlyStopping | None = None

    def attach(self, engine: Engine) -> None:
        """Make ignite's ``EarlyStopping`` for ``engine`` and run it after every validation."""
        if self.patience <= 0:
            return
        self.stopper = EarlyStopping(self.patience, self._score, engine, threshold=self.min_delta, mode=self.mode)
        self.validator.add_event_handler(Events.COMPLETED, self._validated)
        engine.add_event_handler(Events.STARTED, self.stop_if_exhausted)
        if self.state_name:
            register_resume_state(engine, self.state_name, self)

    def _score(self, validator: Engine) -> float:
        """The validator's ``metric``."""
        return float(validator.state.metrics[self.metric])

    def _validated(self, validator: Engine) -> None:
        """Count a validation without improvement (ignite); log when it stops the trainer."""
        if self.stopper is None or self.metric not in validator.state.metrics:
            return
        self.stopper(validator)
        if self.stopper.counter >= self.patience:
            logger.info(f"early stopping: {self.metric} did not improve for {self.patience} validations")

    def stop_if_exhausted(self, engine: Engine) -> None:
        """Terminate at once when resumed state says patience had already run out (killed after stopping)."""
        if self.stopper is not None and self.stopper.counter >= self.patience:
            counter = self.stopper.counter
            logger.info(f"early stopping: already stopped ({self.metric} did not improve for {counter} validations)")
            engine.terminate()

    def state_dict(self) -> dict:
        """Best score (signed: larger is better) and the count of validations without improvement."""
        if self.stopper is None or self.stopper.best_score is None:
            return {"best": None, "counter": 0 if self.stopper is None else self.stopper.counter}
        return {"best": self.sign * self.stopper.best_score, "counter": self.stopper.counter}

    def load_state_dict(self, state: dict) -> None:
        """Restore after resume (the format of :meth:`state_dict`, as 0.13.0 wrote it)."""
        if self.stopper is None:
            return
        self.stopper.best_score = None if state["best"] is None else self.sign * state["best"]
        self.stopper.counter = state["counter"]
