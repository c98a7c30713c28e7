"""SIGTERM and SIGINT during a run: stop at once, keep the last checkpoint, say how to resume.

A scheduler's SIGTERM or a user's Ctrl-C used to end a run with a long traceback. With
:func:`stop_on_signals` installed (the configs' ``initialize`` does it), either signal prints one
line naming the signal, where the checkpoints are and how to resume, then stops the run with exit
status ``128 + signal`` (143 for SIGTERM, 130 for SIGINT). The stop is a :class:`SystemExit` raised
where the run is: writes in progress are atomic (their temporary file is removed), no completion
marker is written, run locks are released at exit, and the same command resumes from the last
checkpoint, as after a SIGKILL. A second signal during the stop gets the previous handler. The
handlers on the way (ignite, MONAI's ``StatsHandler``) log the stop with a traceback, so the resume
command is printed once more when the process exits: it is the last line the user sees.
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

__all__ = ["STOP_SIGNALS", "RunStopped", "stop_on_signals", "restore_signals", "command_line"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_previous: dict[int, object] = {}


class RunStopped(SystemExit):
    """The run was stopped by a signal; its ``code`` is ``128 + signal number``."""


def command_line() -> str:
    """The command that started this process, as typed after ``python`` (``-m package`` restored)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    argv = ["-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]] if spec is not None and spec.name else sys.argv
    return shlex.join([Path(sys.executable).name, *argv])


def _print_last(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def stop_on_signals(output_dir: str | os.PathLike) -> bool:
    """Install the SIGTERM / SIGINT handlers for a run writing to ``output_dir``.

    Args:
        output_dir: the run folder (named in the message: its checkpoints are where it resumes).

    Returns:
        True when installed; False outside the main thread, where Python cannot set handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return False

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        restore_signals()  # a second signal is not caught again
        print(
            f"fetal_nt_roi_cae: stopped by {name}; the checkpoints up to the last finished epoch are kept in "
            f"{output_dir}; run the same command again to resume",
            file=sys.stderr,
            flush=True,
        )
        resume = f"error: stopped by {name} (exit {128 + signum}); resume from the last epoch with: {command_line()}"
        atexit.register(_print_last, resume)
        raise RunStopped(128 + signum)

    for signum in STOP_SIGNALS:
        previous = signal.signal(signum, handler)
        _previous.setdefault(signum, previous)
    return True


def restore_signals() -> None:
    """Put back the handlers :func:`stop_on_signals` replaced (the configs' ``finalize`` does it)."""
    while _previous:
        signum, previous = _previous.popitem()
        signal.signal(signum, previous)
