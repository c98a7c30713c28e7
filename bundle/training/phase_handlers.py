"""The handlers every training phase attaches, in one entry of the phase's handler list.

Both phases of ``configs/train.json`` resume from their last checkpoint, validate every
``val_interval`` epochs, stop early, step their learning-rate schedule, log and mark their
completion; only the objects differ. :class:`PhaseHandlers` attaches those six handlers in that
order (phase 2's loss calibration right after the resume), so a phase's config names its own
objects once and a newcomer reads the handler order in one place.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from bundle.training.handlers import (
    BestModelSaver,
    EarlyStopOnValidation,
    PhaseCompleteHandler,
    ResumeCheckpointHandler,
)
from ignite.engine import Engine
from monai.handlers import LrScheduleHandler, ValidationHandler

__all__ = ["PhaseHandlers"]


class PhaseHandlers:
    """Resume, (calibrate,) validate, stop early, step the schedule, log and mark completion: one phase.

    The handlers attach in this order to the trainer:

    1. :class:`~bundle.training.handlers.ResumeCheckpointHandler` over the network, optimiser,
       schedule, best-model saver and ``loss`` (when given), in ``checkpoint_dir``;
    2. ``calibration`` (phase 2: :class:`~bundle.training.calibration.GradientCalibrationHandler`),
       after the resume so a resumed phase keeps its saved loss weights;
    3. MONAI's ``ValidationHandler`` running ``validator`` every ``val_interval`` epochs;
    4. :class:`~bundle.training.handlers.EarlyStopOnValidation` on the best-model saver's metric and
       direction (``patience`` validations; 0 or less: off);
    5. MONAI's ``LrScheduleHandler`` stepping ``lr_scheduler`` each epoch;
    6. ``logging(tag=tag, desc=desc, validator=validator)``
       (:class:`~bundle.training.phase_logging.PhaseLogging`; None: nothing logged, e.g. ranks > 0);
    7. :class:`~bundle.training.handlers.PhaseCompleteHandler` writing ``complete_marker``.

    Args:
        tag: the phase's name in logs and TensorBoard (``phase1``).
        desc: the phase's name in progress lines (``phase 1``).
        network: the (unwrapped) network the resume checkpoint saves.
        optimizer: the phase's optimiser.
        lr_scheduler: its learning-rate schedule.
        validator: the phase's evaluator.
        best_model: the :class:`~bundle.training.handlers.BestModelSaver` on ``validator``.
        checkpoint_dir: folder of the resume checkpoints.
        complete_marker: file written when the phase completes.
        random_sources: datasets whose augmentation random states the resume checkpoint keeps.
        patience: validations without improvement before stopping.
        val_interval: epochs between validations.
        logging: callable making the phase's logging handler, or None.
        loss: a loss with state to resume (phase 2's loss weights), or None.
        calibration: a handler attached right after the resume, or None.
    """

    def __init__(
        self,
        tag: str,
        desc: str,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler,
        validator: Engine,
        best_model: BestModelSaver,
        checkpoint_dir: str | os.PathLike,
        complete_marker: str | os.PathLike,
        random_sources: list | tuple = (),
        patience: int = 0,
        val_interval: int = 1,
        logging: Callable | None = None,
        loss: torch.nn.Module | None = None,
        calibration=None,
    ) -> None:
        objects = {"model": network, "optimizer": optimizer, "best_model": best_model, "lr_scheduler": lr_scheduler}
        if loss is not None:
            objects["loss"] = loss
        self.handlers = [
            ResumeCheckpointHandler(checkpoint_dir, objects, random_sources=random_sources),
            calibration,
            ValidationHandler(interval=val_interval, validator=validator, epoch_level=True),
            EarlyStopOnValidation(
                validator, best_model.metric, patience, mode=best_model.mode, state_name="early_stop"
            ),
            LrScheduleHandler(lr_scheduler, print_lr=False),
            None if logging is None else logging(tag=tag, desc=desc, validator=validator),
            PhaseCompleteHandler(complete_marker),
        ]

    def attach(self, engine: Engine) -> None:
        """Attach each handler to the trainer ``engine``, in the order above."""
        for handler in self.handlers:
            if handler is not None:
                handler.attach(engine)
