"""What a user sees last when a command fails: the message that names the file, setting or field and the fix.

MONAI's bundle runner wraps every error of a config expression in ``RuntimeError("Failed to evaluate
ConfigExpression ...")`` and Python then prints a long traceback ending in MONAI's line; the useful
message (the bundle's own, raised on purpose) sits in the middle. :func:`install` replaces
``sys.excepthook``: when the exception chain holds an error the bundle raised on purpose (see
:func:`deliberate_error`), it prints that message alone, as the last lines, with no traceback.
Everything else (a bug of ours) keeps Python's full traceback. (A signal stop is a ``SystemExit``,
which never reaches the hook: :mod:`bundle.training.signals` prints its resume command at exit.)
``FETAL_NT_TRACEBACK=1`` prints the full traceback before the message in every case.

The configs install it with ``$import bundle.training.errors`` (imports run before anything else is
evaluated); ``python -m bundle`` has its own (``bundle.cli.main``: one line, exit 2).
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from bundle.utils.paths import REPO_ROOT

__all__ = ["TRACEBACK_ENV", "deliberate_error", "user_message", "install"]

TRACEBACK_ENV = "FETAL_NT_TRACEBACK"
PACKAGE_DIR = REPO_ROOT / "bundle"
#: exception types the bundle raises on purpose for bad input, settings and files
DELIBERATE_TYPES = (ValueError, OSError)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, then its causes and contexts, each once."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _raised_by_bundle(error: BaseException) -> bool:
    """Whether the innermost frame of ``error``'s traceback is the bundle's own code (a deliberate ``raise``)."""
    frames = traceback.extract_tb(error.__traceback__) if error.__traceback__ else []
    if not frames:
        return False
    try:
        return Path(frames[-1].filename).resolve().is_relative_to(PACKAGE_DIR)
    except (OSError, ValueError):
        return False


def deliberate_error(error: BaseException) -> BaseException | None:
    """The error in ``error``'s chain that the bundle raised on purpose, or None.

    That is a disk that is full, an exception type the bundle defines, or one of
    :data:`DELIBERATE_TYPES` whose ``raise`` is in the bundle's code (such messages name the file,
    setting or field and the fix).

    Args:
        error: the exception that reached the top.

    Returns:
        the innermost such error, or None for anything else (a bug: show the traceback).
    """
    found = None
    for item in _chain(error):
        if isinstance(item, OSError) and item.errno == errno.ENOSPC:
            return item
        own_type = type(item).__module__.split(".")[0] == "bundle"  # ImageReadError, CheckpointError, ...
        if own_type or (isinstance(item, DELIBERATE_TYPES) and _raised_by_bundle(item)):
            found = item
    return found


def user_message(error: BaseException) -> str:
    """The text shown for a deliberate error (its last line names what to fix)."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = error.filename or "the output folder"
        return f"error: no space left on {where}; free some space or choose another --output_dir, then run again"
    return f"error: {str(error).strip() or type(error).__name__}"


def _hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    chosen = deliberate_error(error)
    if chosen is None or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        sys.__excepthook__(kind, error, tb)
    if chosen is not None:
        hint = "" if os.environ.get(TRACEBACK_ENV) else f" (set {TRACEBACK_ENV}=1 for the traceback)"
        print(f"fetal_nt_roi_cae: the run stopped{hint}:", file=sys.stderr)
        print(user_message(chosen), file=sys.stderr, flush=True)


def install() -> None:
    """Make :func:`_hook` the process's ``sys.excepthook`` (idempotent)."""
    sys.excepthook = _hook


install()
