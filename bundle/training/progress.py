"""Progress of a training phase: a bar on a terminal, else a log line every ``interval`` seconds with the ETA.

The progress bar (:class:`ProgressBarHandler`) shows only on a terminal (:class:`ProgressHandler` picks);
in a CI log, under ``nohup`` or in a cluster job an epoch would otherwise pass in silence.
:class:`ProgressLogHandler` logs::

    phase 1: epoch 3/30, iteration 12/16, loss 0.2154, 5.7 s/epoch, elapsed 0:00:15, ETA 0:02:36

The ETA is the mean time per iteration so far (of this run, after a resume too) times the
iterations left to ``max_epochs`` (early stopping can end a phase sooner).
"""

from __future__ import annotations

import datetime
import logging
import time

import torch
from ignite.engine import Engine, Events

logger = logging.getLogger("fetal_nt_roi_cae")


def _clock(seconds: float) -> str:
    """``H:MM:SS`` of a duration."""
    return str(datetime.timedelta(seconds=round(max(0.0, seconds))))


class ProgressLogHandler:
    """Log the training progress every ``interval`` seconds (and at the end of every epoch).

    Args:
        desc: what is training (``phase 1``).
        interval: seconds between lines within an epoch (30 by default; 0 logs every iteration).
    """

    def __init__(self, desc: str = "", interval: float = 30.0) -> None:
        self.desc = desc
        self.interval = float(interval)
        self._started = self._last = 0.0
        self._first_iteration = 0

    def attach(self, engine: Engine) -> None:
        """Run on ``STARTED``, every ``ITERATION_COMPLETED`` (logging when due) and ``EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._log)

    def _start(self, engine: Engine) -> None:
        self._started = self._last = time.perf_counter()
        self._first_iteration = engine.state.iteration  # a resumed run counts from where it resumed

    def _iteration(self, engine: Engine) -> None:
        if time.perf_counter() - self._last >= self.interval:
            self._log(engine)

    def line(self, engine: Engine) -> str:
        """The progress line for the engine's current state."""
        state = engine.state
        per_epoch = state.epoch_length or 1
        done = max(1, state.iteration - self._first_iteration)
        elapsed = time.perf_counter() - self._started
        left = max(0, state.max_epochs * per_epoch - state.iteration)
        output = state.output
        loss = output.get("loss") if isinstance(output, dict) else None
        within = (state.iteration - 1) % per_epoch + 1
        parts = [f"{self.desc}: epoch {state.epoch}/{state.max_epochs}, iteration {within}/{per_epoch}"]
        if loss is not None:
            parts.append(f"loss {float(loss.detach() if isinstance(loss, torch.Tensor) else loss):.4f}")
        parts += [
            f"{elapsed / done * per_epoch:.1f} s/epoch",
            f"elapsed {_clock(elapsed)}",
            f"ETA {_clock(elapsed / done * left)}",
        ]
        return ", ".join(parts)

    def _log(self, engine: Engine) -> None:
        self._last = time.perf_counter()
        logger.info(self.line(engine))


class ProgressBarHandler:
    """Ignite progress bar showing the running loss of a trainer.

    Args:
        desc: text before the bar.
    """

    def __init__(self, desc: str = "") -> None:
        self.desc = desc

    def attach(self, engine: Engine) -> None:
        """Attach the bar to the engine's iterations."""
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False, desc=self.desc).attach(
            engine, output_transform=lambda output: {"loss": float(output["loss"])}
        )


class ProgressHandler:
    """A progress bar on a terminal (``bar``), else a progress line every ``interval`` seconds.

    Args:
        desc: what is training (``phase 1``).
        bar: draw :class:`ProgressBarHandler` (the config's ``show_progress``: a terminal) instead
            of logging :class:`ProgressLogHandler` lines.
        interval: seconds between log lines within an epoch.
    """

    def __init__(self, desc: str = "", bar: bool = False, interval: float = 30.0) -> None:
        from bundle.training.settings import as_flag

        self.handler = ProgressBarHandler(desc) if as_flag(bar, "show_progress") else ProgressLogHandler(desc, interval)

    def attach(self, engine: Engine) -> None:
        """Attach the bar or the log lines."""
        self.handler.attach(engine)
