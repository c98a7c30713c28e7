"""Reproducible zoo-layout zip of the bundle: ``python -m bundle package``.

The archive holds one top-level folder ``fetal_nt_roi_cae/`` with ``configs/``, ``models/`` (the
trained weights, exported encoders and scorer when present), ``docs/``, the ``bundle/`` package the
configs import, ``LICENSE``, ``README.md`` and ``pyproject.toml``; never run outputs, data, caches
or tests. Entries are sorted and carry a fixed timestamp and permissions, so the same inputs give
the same bytes.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from bundle.atomic import atomic_path

REPO = Path(__file__).resolve().parents[1]
NAME = "fetal_nt_roi_cae"
TOP_FILES = ("LICENSE", "README.md", "pyproject.toml", "metadata.json")
FOLDERS = ("configs", "docs", "bundle")
MODEL_SUFFIXES = (".pt", ".ts", ".onnx", ".npz", ".json", ".md")
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache", "train_runs"}
MAX_FILE_BYTES = 25 * 1024 * 1024  # the zoo keeps larger files out of the archive (large_files.yml)
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def _files(root: Path, models_dir: Path | None) -> list[tuple[Path, str]]:
    """(source file, archive name) pairs in archive order."""
    pairs = [(root / name, f"{NAME}/{name}") for name in TOP_FILES if (root / name).exists()]
    if (root / "models/README.md").exists():
        pairs.append((root / "models/README.md", f"{NAME}/models/README.md"))
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and not SKIP_PARTS & set(path.relative_to(root).parts) and path.suffix != ".pyc":
                pairs.append((path, f"{NAME}/{path.relative_to(root).as_posix()}"))
    if models_dir is not None:
        for path in sorted(models_dir.rglob("*")):
            if path.is_file() and path.suffix in MODEL_SUFFIXES and not path.name.startswith("."):
                pairs.append((path, f"{NAME}/models/{path.relative_to(models_dir).as_posix()}"))
    return sorted(pairs, key=lambda pair: pair[1])


def package_bundle(
    output_dir: str | os.PathLike = "dist", models_dir: str | os.PathLike | None = None, root: Path = REPO
) -> Path:
    """Write ``fetal_nt_roi_cae_v<version>.zip`` atomically.

    Args:
        output_dir: where the zip goes.
        models_dir: folder of trained files to ship as ``models/`` (default ``<root>/models``; its
            ``README.md`` always ships). Pass a folder without weights for a code-only package.
        root: bundle root to package.

    Returns:
        the zip's path.

    Raises:
        ValueError: when a file exceeds 25 MB (list it in ``large_files.yml`` and keep it out).
    """
    from bundle import __version__

    models = Path(models_dir) if models_dir is not None else root / "models"
    pairs = _files(root, models)
    too_big = [str(src) for src, _ in pairs if src.stat().st_size > MAX_FILE_BYTES]
    if too_big:
        raise ValueError(f"files over 25 MB cannot go in the zip: {too_big}; list them in large_files.yml instead")
    target = Path(output_dir) / f"{NAME}_v{__version__}.zip"
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        seen = set()
        for src, name in pairs:
            if name in seen:  # models/README.md from both the repo and models_dir
                continue
            seen.add(name)
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = (0o755 if os.access(src, os.X_OK) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, src.read_bytes())  # symlinks (configs/metadata.json) are stored as files
    return target
