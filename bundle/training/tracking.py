"""MLflow tracking of the main job: both phases in one MLflow run, closed with the report as artifacts.

``python -m monai.bundle run training --config_file configs/train.json --tracking configs/mlflow.json``
adds :class:`PhaseMLFlowHandler` (MONAI's ``MLFlowHandler`` with a metric-name prefix) to the trainer and
validator of each phase; ``finalize`` then logs the run folder's report and closes the MLflow run
(:func:`finish_tracking`). A killed run leaves its MLflow run open, and the resumed job continues it.

``--tracking mlflow`` (MONAI's default settings) assumes engines that decollate their output; this
bundle's engines keep the batch whole (``decollate: false``, faster), so importing this module from a
config re-runs such a command with ``--tracking configs/mlflow.json`` (:func:`use_bundle_settings`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from bundle.training.help import is_bundle_command
from bundle.utils.paths import config_file
from monai.handlers import MLFlowHandler
from monai.utils import flatten_dict

__all__ = ["PhaseMLFlowHandler", "finish_tracking", "bundle_settings_argv", "use_bundle_settings"]

#: the bundle's tracking settings, beside train.json
SETTINGS_FILE = str(config_file("mlflow.json"))


class PhaseMLFlowHandler(MLFlowHandler):
    """MONAI's ``MLFlowHandler`` whose metric names start with a prefix (``phase1/``, ``phase2/``).

    Both phases log to one MLflow run; the prefix keeps phase 2's losses and validation metrics (whose
    objective differs) apart from phase 1's. Started handlers are remembered so that
    :func:`finish_tracking` can attach the report and close the run after the last phase.

    Args:
        prefix: put before every metric name.
        kwargs: passed to ``monai.handlers.MLFlowHandler``.
    """

    started: ClassVar[list[PhaseMLFlowHandler]] = []

    def __init__(self, prefix: str = "", **kwargs: Any) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise ValueError(
                'tracking: MLflow is not installed; pip install -e ".[tracking]" adds it (or run without --tracking)'
            )
        super().__init__(**kwargs)
        self.prefix = prefix

    def start(self, engine: Any) -> None:
        """Start or join the MLflow run and remember this handler (see :func:`finish_tracking`)."""
        super().start(engine)
        if self not in PhaseMLFlowHandler.started:
            PhaseMLFlowHandler.started.append(self)

    def _log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        named = {f"{self.prefix}{key}": value for key, value in flatten_dict(metrics).items()}
        super()._log_metrics(named, step=step)


def finish_tracking(report_dir: str | os.PathLike) -> int:
    """Log the files of ``report_dir`` to each open MLflow run of this process and close the runs.

    Args:
        report_dir: the run's report folder (missing: nothing is logged, the runs are still closed).

    Returns:
        the number of files logged (0 when tracking is off).
    """
    logged, done = 0, set()
    files = sorted(p for p in Path(report_dir).rglob("*") if p.is_file()) if Path(report_dir).is_dir() else []
    for handler in PhaseMLFlowHandler.started:
        run = handler.cur_run
        if run is not None and run.info.run_id not in done:
            done.add(run.info.run_id)
            for path in files:
                folder = Path("report", path.parent.relative_to(report_dir)).as_posix()
                handler.client.log_artifact(run.info.run_id, str(path), artifact_path=folder)
                logged += 1
        handler.close()
    PhaseMLFlowHandler.started.clear()
    return logged


def bundle_settings_argv(argv: Sequence[str]) -> list[str] | None:
    """``argv`` with ``--tracking mlflow`` replaced by the bundle's settings file, or None if absent.

    Args:
        argv: a ``python -m monai.bundle`` command line (``sys.argv``).

    Returns:
        the new arguments after the program name, or None when ``argv`` does not ask for MONAI's defaults.
    """
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg == "--tracking" and i + 1 < len(args) and args[i + 1] == "mlflow":
            return [*args[: i + 1], SETTINGS_FILE, *args[i + 2 :]]
        if arg == "--tracking=mlflow":
            return [*args[:i], f"--tracking={SETTINGS_FILE}", *args[i + 1 :]]
    return None


def use_bundle_settings(argv: Sequence[str] | None = None) -> None:
    """Re-run a ``monai.bundle`` command that asks for ``--tracking mlflow`` with the bundle's settings."""
    argv = list(sys.argv if argv is None else argv)
    if not is_bundle_command(argv):
        return
    args = bundle_settings_argv(argv)
    if args is not None and Path(SETTINGS_FILE).is_file():
        print(f"tracking: MONAI's default MLflow settings expect decollated outputs; using {SETTINGS_FILE}", flush=True)
        os.execv(sys.executable, [sys.executable, "-m", "monai.bundle", *args])


use_bundle_settings()
