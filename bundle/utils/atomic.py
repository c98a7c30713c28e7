"""Atomic file output: write to a temporary file in the same folder, then rename over the target.

A crash or a full disk leaves either the old file or the new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary_beside(target: Path) -> Path:
    """An empty hidden temporary file in ``target``'s folder (created when missing), same suffix."""
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if target.name.endswith(".nii.gz") else target.suffix  # writers sniff the whole suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    return Path(tmp_name)


def _publish(tmp: Path, target: Path) -> None:
    """Give ``tmp`` the usual file permissions and rename it over ``target`` (one atomic step)."""
    if tmp.exists():
        os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, target)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Args:
        path: final file path; its folder is created when missing.

    Yields:
        the temporary path to write to (same suffix as ``path`` so format-sniffing writers work).
    """
    target = Path(path)
    tmp = _temporary_beside(target)
    try:
        yield tmp
        _publish(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


class AtomicTextFile:
    """A text file written piece by piece that appears at ``path`` only when committed.

    For outputs too large to hold in memory until the end (the results table of a 10,000-image
    inference run): text goes to a hidden temporary file beside ``path``; :meth:`commit` renames it
    over ``path`` in one step and :meth:`discard` removes it, so ``path`` is never half-written. File
    names that are not valid UTF-8 are written back as their bytes, as by :func:`atomic_write_text`.

    Args:
        path: final file path; its folder is created when missing.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._tmp = _temporary_beside(self.path)
        self._handle = open(self._tmp, "w", encoding="utf-8", errors="surrogateescape", newline="")

    def write(self, text: str) -> None:
        """Append ``text``."""
        self._handle.write(text)

    def flush(self) -> None:
        """Push what was written so far to the temporary file (e.g. once per batch)."""
        self._handle.flush()

    def commit(self) -> None:
        """Close the file and move it to ``path``."""
        self._handle.close()
        _publish(self._tmp, self.path)

    def discard(self) -> None:
        """Close and remove the temporary file; ``path`` is left as it was."""
        self._handle.close()
        self._tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically.

    File names that are not valid UTF-8 (Python keeps their bytes as surrogate escapes) are written
    back as their original bytes, so a path in a CSV still opens the file it names.
    """
    atomic_write_bytes(path, text.encode("utf-8", errors="surrogateescape"))


def atomic_write_json(path: str | os.PathLike, obj: object, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def csv_lines(rows: list[dict], columns: list[str], header: bool = True) -> str:
    """``rows`` as CSV text with ``columns`` (missing values empty, extra keys ignored, one line per row)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", restval="", lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def atomic_write_csv(path: str | os.PathLike, rows: list[dict], columns: list[str]) -> None:
    """Write ``rows`` as CSV with ``columns`` (missing values empty, extra keys ignored) atomically."""
    atomic_write_text(path, csv_lines(rows, columns))
