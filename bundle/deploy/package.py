"""The bundle as the model zoo takes it: ``python -m bundle package [--format zip|hf]``.

``zip`` (default): a reproducible ``fetal_nt_roi_cae_v<version>.zip`` with one top-level folder
``fetal_nt_roi_cae/``. ``hf``: the folder ``fetal_nt_roi_cae_hf/`` laid out as a Hugging Face Hub
model repository, which ``python -m monai.bundle download --source huggingface_hub`` fetches as a
snapshot (the bundle's files at the repository root, ``README.md`` the Hub's model card with its
YAML front matter). Both hold ``configs/``, ``models/`` (the trained weights, exported encoders
and scorer when present), ``docs/``, the ``bundle/`` package the configs import, ``LICENSE``,
``README.md``, ``pyproject.toml``, ``metadata.json`` and ``large_files.yml`` (the weights' URL and
MD5 in the zoo's format); never run outputs, data, caches or tests. Entries are sorted and carry a
fixed timestamp and permissions, so the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from bundle.utils.atomic import atomic_path
from bundle.utils.paths import REPO_ROOT

NAME = "fetal_nt_roi_cae"
FORMATS = ("zip", "hf")
TOP_FILES = ("LICENSE", "README.md", "pyproject.toml", "metadata.json")
FOLDERS = ("configs", "docs", "bundle")
MODEL_SUFFIXES = (".pt", ".ts", ".onnx", ".npz", ".json", ".md")
WEIGHT_SUFFIXES = (".pt", ".ts", ".onnx")
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache", "train_runs"}
#: model files with one row per training case (case ids, sites, splits: patient or study identifiers
#: with real data); shipped only on request (``--include-per-case``)
PER_CASE_FILES = ("train_latents.npz",)
MAX_FILE_BYTES = 25 * 1024 * 1024  # the zoo keeps larger files out of git (large_files.yml)
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
#: where the zoo hosts new bundles (Hugging Face Hub); ``--weights-url`` replaces it
DEFAULT_WEIGHTS_URL = f"https://huggingface.co/MONAI/{NAME}/resolve/main"
HF_FRONT_MATTER = f"""---
license: apache-2.0
library_name: monai
pipeline_tag: image-feature-extraction
tags:
- monai
- medical
- ultrasound
- fetal
- nuchal-translucency
- autoencoder
- representation-learning
---

<!-- Hugging Face Hub model card of the MONAI bundle {NAME}; the same text is docs/README.md. -->

"""


def _shippable_model_file(path: Path, models_dir: Path, include_per_case: bool) -> bool:
    """A finished model file: known suffix, no hidden or temporary file or folder on its way, per-case data on request.

    An interrupted export or save leaves ``models/.export.*/`` folders and ``.tmp`` files behind; they
    are never complete, so nothing under a name starting with ``.`` or ``tmp`` ships.
    """
    parts = path.relative_to(models_dir).parts
    if any(part.startswith((".", "tmp")) or part.endswith((".tmp", ".part")) for part in parts):
        return False
    if path.name in PER_CASE_FILES and not include_per_case:
        return False
    return path.is_file() and path.suffix in MODEL_SUFFIXES


def _files(root: Path, models_dir: Path | None, include_per_case: bool = False) -> list[tuple[Path, str]]:
    """(source file, path inside the bundle) pairs in bundle order."""
    pairs = [(root / name, name) for name in TOP_FILES if (root / name).exists()]
    if (root / "models/README.md").exists():
        pairs.append((root / "models/README.md", "models/README.md"))
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and not SKIP_PARTS & set(path.relative_to(root).parts) and path.suffix != ".pyc":
                pairs.append((path, path.relative_to(root).as_posix()))
    if models_dir is not None:
        for path in sorted(models_dir.rglob("*")):
            if _shippable_model_file(path, models_dir, include_per_case):
                pairs.append((path, f"models/{path.relative_to(models_dir).as_posix()}"))
    unique = {}
    for src, name in pairs:  # models/README.md from both the repo and models_dir: the first wins
        unique.setdefault(name, src)
    return sorted(((src, name) for name, src in unique.items()), key=lambda pair: pair[1])


def md5(path: str | os.PathLike) -> str:
    """MD5 hex digest of a file (the hash the zoo's ``large_files.yml`` entries use)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def large_files_yaml(pairs: list[tuple[Path, str]], weights_url: str = DEFAULT_WEIGHTS_URL) -> str:
    """``large_files.yml`` in the zoo's format: ``path``, ``url``, ``hash_val``, ``hash_type`` per weight file.

    Args:
        pairs: (source file, path inside the bundle) of the packaged files.
        weights_url: URL of the folder that holds the bundle's files; each entry's URL is this plus its path.

    Returns:
        the YAML text (empty list when no weights are packaged).
    """
    weights = [(src, name) for src, name in pairs if name.startswith("models/") and name.endswith(WEIGHT_SUFFIXES)]
    if not weights:
        return "large_files: []\n"
    lines = ["large_files:"]
    for src, name in weights:
        lines += [
            f'  - path: "{name}"',
            f'    url: "{weights_url.rstrip("/")}/{name}"',
            f'    hash_val: "{md5(src)}"',
            '    hash_type: "md5"',
        ]
    return "\n".join(lines) + "\n"


def hub_model_card(model_card: str) -> str:
    """The Hub's ``README.md``: YAML front matter, then the model card with its links made relative to the root."""
    relative = re.compile(r"\]\((?!https?://|#|/|mailto:)([^)]+)\)")
    return HF_FRONT_MATTER + relative.sub(lambda m: f"](docs/{m.group(1)})", model_card)


def _contents(root: Path, models: Path, weights_url: str, hub: bool, include_per_case: bool) -> dict[str, bytes]:
    """Path inside the bundle -> bytes, for every packaged file."""
    pairs = _files(root, models, include_per_case)
    too_big = [str(src) for src, _ in pairs if src.stat().st_size > MAX_FILE_BYTES]
    if too_big:
        raise ValueError(f"files over 25 MB cannot be packaged: {too_big}; host them and list them in large_files.yml")
    contents = {name: src.read_bytes() for src, name in pairs}  # symlinks (configs/metadata.json) become files
    contents["large_files.yml"] = large_files_yaml(pairs, weights_url).encode()
    if hub:
        contents["README.md"] = hub_model_card((root / "docs/README.md").read_text()).encode()
    return dict(sorted(contents.items()))


def package_bundle(
    output_dir: str | os.PathLike = "dist",
    models_dir: str | os.PathLike | None = None,
    root: Path = REPO_ROOT,
    package_format: str = "zip",
    weights_url: str = DEFAULT_WEIGHTS_URL,
    include_per_case: bool = False,
) -> Path:
    """Write the zoo package atomically.

    Args:
        output_dir: where the package goes.
        models_dir: folder of trained files to ship as ``models/`` (default ``<root>/models``; its
            ``README.md`` always ships). Pass a folder without weights for a code-only package.
        root: bundle root to package.
        package_format: ``zip`` (``fetal_nt_roi_cae_v<version>.zip``) or ``hf`` (the folder
            ``fetal_nt_roi_cae_hf/``, a Hugging Face Hub model repository).
        weights_url: base URL written into ``large_files.yml``.
        include_per_case: also ship :data:`PER_CASE_FILES` (one row per training case, with case ids);
            off by default, since with real data those ids identify patients or studies.

    Returns:
        the zip's or the folder's path.

    Raises:
        ValueError: for an unknown format, or when a file exceeds 25 MB.
    """
    from bundle import __version__

    if package_format not in FORMATS:
        raise ValueError(f"unknown package format {package_format!r}; choose one of {', '.join(FORMATS)}")
    models = Path(models_dir) if models_dir is not None else root / "models"
    contents = _contents(root, models, weights_url, package_format == "hf", include_per_case)
    output = Path(output_dir)
    if package_format == "hf":
        return _write_folder(contents, output / f"{NAME}_hf")
    target = output / f"{NAME}_v{__version__}.zip"
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents.items():
            info = zipfile.ZipInfo(f"{NAME}/{name}", date_time=FIXED_TIME)
            executable = (root / name).is_file() and os.access(root / name, os.X_OK)
            info.external_attr = (0o755 if executable else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return target


def _write_folder(contents: dict[str, bytes], target: Path) -> Path:
    """Write the files into a new folder beside ``target``, then swap it in (a crash keeps the old one)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    for name, data in contents.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
