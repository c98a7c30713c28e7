"""One run per folder: a lock file that names its holder, released at exit, taken over when stale.

Two main jobs on the same ``output_dir`` or ``models_dir`` would both train to the end and write
the same files. :func:`acquire_run_locks` creates ``.run.lock`` in each folder with ``O_EXCL``; a
second run finds it and is refused at once with the holder's process id, host and start time. A lock
whose process is gone (a crash, SIGKILL) is stale and is taken over with a warning, so it never
blocks forever. The same process may take its own lock again (several workflows in one process).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import time
from pathlib import Path

logger = logging.getLogger("fetal_nt_roi_cae")

__all__ = ["LOCK_NAME", "RunLockError", "acquire_run_locks", "release_run_locks"]

LOCK_NAME = ".run.lock"
_held: list[Path] = []


class RunLockError(RuntimeError):
    """Another live run holds the folder."""


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused process id apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the lock's process still runs (on another host: assumed alive)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, ValueError, OverflowError):
        return False
    started = holder.get("start_ticks")
    return started is None or _start_ticks(pid) in (None, started)


def _claim(path: Path, record: dict) -> bool:
    """Create the lock file exclusively; False when it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle)
        handle.write("\n")
    return True


def acquire_run_locks(folders: dict[str, str | os.PathLike]) -> list[Path]:
    """Lock each folder for this run, or refuse at once when another live run holds one.

    Args:
        folders: config key -> folder, e.g. ``{"output_dir": ..., "models_dir": ...}`` (created if needed).

    Returns:
        the lock files now held (released when the process exits, or by :func:`release_run_locks`).

    Raises:
        RunLockError: naming the folder, the run that holds it and the fix.
    """
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start_ticks": _start_ticks(os.getpid()),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    taken = []
    try:
        for key, folder in folders.items():
            path = Path(folder) / LOCK_NAME
            path.parent.mkdir(parents=True, exist_ok=True)
            while not _claim(path, record):
                try:
                    holder = json.loads(path.read_text())
                except (OSError, ValueError):
                    holder = {}
                if holder.get("pid") == os.getpid() and holder.get("host") == record["host"]:
                    break  # this process's own lock
                if holder and _alive(holder):
                    raise RunLockError(
                        f"{key} = {folder}: another run is using it (process {holder.get('pid')} on "
                        f"{holder.get('host')}, started {holder.get('started')}; lock {path}). Wait for it to "
                        f"finish, or give this run another --{key}"
                    )
                logger.warning(f"{path}: taking over a stale lock ({holder or 'unreadable'}); its run is gone")
                path.unlink(missing_ok=True)
            taken.append(path)
    except BaseException:
        release_run_locks(taken)
        raise
    _held.extend(p for p in taken if p not in _held)
    return taken


def release_run_locks(paths: list[Path] | None = None) -> None:
    """Remove this process's locks (all it holds by default)."""
    for path in list(_held if paths is None else paths):
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass
        if path in _held:
            _held.remove(path)


atexit.register(release_run_locks)
